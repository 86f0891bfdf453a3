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

/// Everything but RFC 3986's unreserved characters is escaped in a path segment.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes one path segment (project, session and window names may hold
/// anything, `/` and `%` included).
pub fn segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, PATH_SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn segments_keep_unreserved_characters_only() {
        assert_eq!(super::segment("a-b.c_d~e9"), "a-b.c_d~e9");
        assert_eq!(super::segment("my proj/x%"), "my%20proj%2Fx%25");
        assert_eq!(super::segment("café"), "caf%C3%A9");
    }
}
