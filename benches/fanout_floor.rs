//! What fan-out latency the machine allows, for the shared load generator's `fanout`
//! (not a timed test): a server that speaks just enough of the floor's wire shape — a POST
//! of an event answered `201`, a project WebSocket — and does nothing else: no store, no
//! actors, no checks. Each POST body goes to every socket as one text frame, the way the
//! floor sends a committed event (one broadcast channel, a task per socket, one write and
//! flush per event), after the `201` is on its way.
//!
//!   cargo bench --bench fanout_floor -- --listen 127.0.0.1:4720 [--threads 2]
//!   $PB fanout --base http://127.0.0.1:4720 --project p --session s --subs 100 --events 200 --interval-ms 50
//!
//! Runs until killed. The difference between the floor's figures and this server's is what
//! the floor's own work (screen, commit, actors) costs a subscriber.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use futures::{SinkExt, StreamExt};
use tokio::sync::broadcast;

type BoxErr = Box<dyn std::error::Error + Send + Sync>;

async fn post_event(State(tx): State<broadcast::Sender<Utf8Bytes>>, body: Bytes) -> StatusCode {
    match Utf8Bytes::try_from(body) {
        Ok(text) => {
            // No subscribers is fine.
            let _ = tx.send(text);
            StatusCode::CREATED
        }
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

async fn ws(State(tx): State<broadcast::Sender<Utf8Bytes>>, up: WebSocketUpgrade) -> Response {
    let rx = tx.subscribe();
    up.read_buffer_size(4 * 1024)
        .on_upgrade(move |socket| pump(socket, rx))
}

async fn pump(socket: WebSocket, mut rx: broadcast::Receiver<Utf8Bytes>) {
    let (mut tx, mut incoming) = socket.split();
    // The peer's frames only end the socket.
    tokio::spawn(async move { while let Some(Ok(_)) = incoming.next().await {} });
    while let Ok(text) = rx.recv().await {
        if tx.send(Message::Text(text)).await.is_err() {
            return;
        }
    }
}

/// The value after `name`, else `default`.
fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or_else(|| default.to_owned(), Clone::clone)
}

fn main() -> Result<(), BoxErr> {
    let args: Vec<String> = std::env::args().collect();
    let listen = arg(&args, "--listen", "127.0.0.1:4720");
    let threads: usize = arg(&args, "--threads", "2").parse()?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?
        .block_on(async {
            let (tx, _) = broadcast::channel::<Utf8Bytes>(1024);
            let app = Router::new()
                .route("/projects/{p}/sessions/{s}/events", post(post_event))
                .route("/projects/{p}/ws", get(ws))
                .with_state(tx);
            // As the floor does: an event frame is not held back for the next one.
            let listener = tokio::net::TcpListener::bind(&listen).await?.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            eprintln!("fan-out floor on {listen}");
            axum::serve(listener, app).await?;
            Ok(())
        })
}
