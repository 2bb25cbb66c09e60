//! Bidirectional streaming: chat rooms. Each member sends a stream of lines and receives
//! the stream of everyone's lines in the room, over one call.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use traitrpc::{service, Streaming};

/// A line said in a room.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Said {
    pub who: String,
    pub line: String,
}

#[service]
pub trait Chat {
    /// Joins `room` as `name`: `lines` are said to the room; the answer is everything said
    /// in it from now on, until this member's lines end.
    async fn join(&self, room: String, name: String, lines: Streaming<String>) -> Streaming<Said>;
}

#[derive(Default)]
struct Rooms {
    rooms: Mutex<HashMap<String, broadcast::Sender<Said>>>,
}

impl Chat for Rooms {
    async fn join(
        &self,
        room: String,
        name: String,
        mut lines: Streaming<String>,
    ) -> Streaming<Said> {
        let sender = self
            .rooms
            .lock()
            .unwrap()
            .entry(room)
            .or_insert_with(|| broadcast::channel(256).0)
            .clone();
        let heard = sender.subscribe();
        // Forward this member's lines to the room while the answer streams back.
        let speaker = name.clone();
        tokio::spawn(async move {
            while let Some(Ok(line)) = lines.next().await {
                let _ = sender.send(Said {
                    who: speaker.clone(),
                    line,
                });
            }
            let _ = sender.send(Said {
                who: speaker,
                line: "(left)".into(),
            });
        });
        // Everything said in the room, up to this member's own leaving.
        Streaming::from_stream(futures::stream::unfold(
            (heard, name, false),
            |(mut heard, name, left)| async move {
                if left {
                    return None;
                }
                loop {
                    match heard.recv().await {
                        Ok(said) => {
                            let left = said.who == name && said.line == "(left)";
                            return Some((said, (heard, name, left)));
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            },
        ))
    }
}

/// A member who says `lines` (one every 50 ms) and prints what they hear.
async fn member(
    client: ChatClient,
    name: &'static str,
    lines: &'static [&'static str],
) -> anyhow::Result<()> {
    let said =
        Streaming::from_stream(futures::stream::iter(lines.iter()).then(|line| async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            line.to_string()
        }));
    let mut heard = client.join("lobby".into(), name.into(), said).await?;
    while let Some(said) = heard.next().await {
        let said = said?;
        println!("[{name} hears] {}: {}", said.who, said.line);
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server = traitrpc::serve("127.0.0.1:0", ChatServer::new(Rooms::default())).await?;
    let conn = traitrpc::connect(server.local_addr()).await?;
    let alice = member(
        ChatClient::new(conn.clone()),
        "alice",
        &["hi bob", "streams both ways", "bye"],
    );
    let bob = member(
        ChatClient::new(conn),
        "bob",
        &["hi alice", "over one connection"],
    );
    let (a, b) = tokio::join!(alice, bob);
    a?;
    b?;
    server.shutdown().await;
    Ok(())
}
