//! Large file transfer with streams: the client uploads a 64 MiB file in 256 KiB chunks
//! (client streaming) and downloads it back (server streaming), printing progress. Flow
//! control keeps both sides' memory bounded whatever the file size.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use traitrpc::{service, ByteBuf, Streaming};

/// What the server stored.
#[derive(Debug, Serialize, Deserialize)]
pub struct Stored {
    pub bytes: u64,
    pub checksum: u64,
}

#[service]
pub trait Files {
    /// Stores the chunks under `name`.
    async fn upload(&self, name: String, chunks: Streaming<ByteBuf>) -> Result<Stored, String>;
    /// Streams the file stored under `name` in chunks of `chunk` bytes.
    async fn download(&self, name: String, chunk: u32) -> Streaming<ByteBuf>;
}

/// Stores files in a directory.
struct Store {
    dir: PathBuf,
}

fn checksum(sum: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(sum, |s, &b| s.wrapping_mul(31).wrapping_add(b as u64))
}

impl Store {
    fn path(&self, name: &str) -> Result<PathBuf, String> {
        if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(format!("invalid file name {name:?}"));
        }
        Ok(self.dir.join(name))
    }
}

impl Files for Store {
    async fn upload(&self, name: String, mut chunks: Streaming<ByteBuf>) -> Result<Stored, String> {
        let path = self.path(&name)?;
        let mut file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| e.to_string())?;
        let (mut bytes, mut sum) = (0u64, 0u64);
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| e.to_string())?;
            sum = checksum(sum, &chunk);
            bytes += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(|e| e.to_string())?;
        }
        file.flush().await.map_err(|e| e.to_string())?;
        Ok(Stored {
            bytes,
            checksum: sum,
        })
    }

    async fn download(&self, name: String, chunk: u32) -> Streaming<ByteBuf> {
        let file = match self.path(&name) {
            Ok(path) => tokio::fs::File::open(path).await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        let file = match file {
            Ok(file) => file,
            Err(message) => {
                return Streaming::from_results(futures::stream::once(async move {
                    Err(traitrpc::RpcError::Aborted { message })
                }))
            }
        };
        let chunk = chunk.clamp(1, 4 << 20) as usize;
        Streaming::from_results(futures::stream::unfold(
            Some(file),
            move |file| async move {
                let mut file = file?;
                let mut buf = vec![0u8; chunk];
                match file.read(&mut buf).await {
                    Ok(0) => None,
                    Ok(n) => {
                        buf.truncate(n);
                        Some((Ok(ByteBuf::from(buf)), Some(file)))
                    }
                    Err(e) => Some((
                        Err(traitrpc::RpcError::Aborted {
                            message: e.to_string(),
                        }),
                        None,
                    )),
                }
            },
        ))
    }
}

const FILE_SIZE: u64 = 64 * 1024 * 1024;
const CHUNK: usize = 256 * 1024;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("rpc-file-transfer-{}", std::process::id()));
    tokio::fs::create_dir_all(&dir).await?;
    let server =
        traitrpc::serve("127.0.0.1:0", FilesServer::new(Store { dir: dir.clone() })).await?;
    let files = FilesClient::new(traitrpc::connect(server.local_addr()).await?);

    // Upload: chunks are produced lazily, only as the server grants credit.
    let sent = Arc::new(AtomicU64::new(0));
    let progress = Arc::clone(&sent);
    let mut local_sum = 0u64;
    let chunks: Vec<ByteBuf> = (0..FILE_SIZE as usize / CHUNK)
        .map(|i| {
            let data: Vec<u8> = (0..CHUNK).map(|j| ((i * 7 + j) % 251) as u8).collect();
            local_sum = checksum(local_sum, &data);
            ByteBuf::from(data)
        })
        .collect();
    let upload = Streaming::from_stream(futures::stream::iter(chunks).map(move |chunk| {
        let total = progress.fetch_add(chunk.len() as u64, Ordering::Relaxed) + chunk.len() as u64;
        if total % (16 << 20) == 0 {
            println!(
                "  upload: {:>3} MiB of {} MiB",
                total >> 20,
                FILE_SIZE >> 20
            );
        }
        chunk
    }));
    let started = Instant::now();
    let stored = files.upload("big.bin".into(), upload).await?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "uploaded {} MiB in {secs:.2} s ({:.0} MiB/s), checksum {}",
        stored.bytes >> 20,
        stored.bytes as f64 / secs / (1 << 20) as f64,
        if stored.checksum == local_sum {
            "matches"
        } else {
            "DIFFERS"
        }
    );
    anyhow::ensure!(
        stored.bytes == FILE_SIZE && stored.checksum == local_sum,
        "upload corrupted"
    );

    // Download it back.
    let started = Instant::now();
    let mut download = files.download("big.bin".into(), CHUNK as u32).await?;
    let (mut received, mut sum) = (0u64, 0u64);
    while let Some(chunk) = download.next().await {
        let chunk = chunk?;
        sum = checksum(sum, &chunk);
        received += chunk.len() as u64;
        if received % (16 << 20) == 0 {
            println!(
                "  download: {:>3} MiB of {} MiB",
                received >> 20,
                FILE_SIZE >> 20
            );
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "downloaded {} MiB in {secs:.2} s ({:.0} MiB/s), checksum {}",
        received >> 20,
        received as f64 / secs / (1 << 20) as f64,
        if sum == local_sum {
            "matches"
        } else {
            "DIFFERS"
        }
    );
    anyhow::ensure!(
        received == FILE_SIZE && sum == local_sum,
        "download corrupted"
    );

    // A missing file ends the stream with a typed error.
    let mut missing = files.download("nope.bin".into(), 1024).await?;
    if let Some(Err(e)) = missing.next().await {
        println!("download of a missing file: {e}");
    }

    server.shutdown().await;
    tokio::fs::remove_dir_all(&dir).await?;
    Ok(())
}
