//! Names shared by the sidecar and its clients (the hook, the MCP server, agents).

/// The header carrying the local secret.
pub const SECRET_HEADER: &str = "x-polaris-daemon-secret";
/// An event id the caller chose (UUID), kept all the way to the floor.
pub const EVENT_ID_HEADER: &str = "x-polaris-event-id";
/// The time the caller saw the event (RFC 3339).
pub const EVENT_TIME_HEADER: &str = "x-polaris-event-time";
/// The sidecar's port when nothing else says.
pub const DEFAULT_PORT: u16 = 4322;

/// The port hooks and the MCP server talk to: `POLARIS_PORT` (the original hooks' name),
/// else `POLARIS_DAEMON_PORT` (the daemon's), else 4322.
pub fn client_port(env: &polaris_config::Env) -> u16 {
    ["POLARIS_PORT", "POLARIS_DAEMON_PORT"]
        .iter()
        .filter_map(|k| env.get(k))
        .find_map(|v| v.trim().parse::<u16>().ok().filter(|p| *p != 0))
        .unwrap_or(DEFAULT_PORT)
}
