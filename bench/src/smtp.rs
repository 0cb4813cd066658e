//! A small SMTP sink: it accepts every message the mailer hands to its SMTP transport and
//! records when each recipient's message ended (the `.` after `DATA`), so that the benchmark
//! can time sign-up → email handed to the transport.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// When each recipient's message arrived.
#[derive(Clone, Default)]
pub struct Received(Arc<Mutex<HashMap<String, Instant>>>);

impl Received {
    /// When the first message to `address` arrived, if one did.
    pub fn at(&self, address: &str) -> Option<Instant> {
        self.0.lock().ok()?.get(address).copied()
    }

    fn record(&self, recipients: &[String], at: Instant) {
        if let Ok(mut map) = self.0.lock() {
            for recipient in recipients {
                map.entry(recipient.clone()).or_insert(at);
            }
        }
    }
}

/// Listens on a free local port; returns the port and the record of messages.
pub async fn start() -> anyhow::Result<(u16, Received)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let received = Received::default();
    let record = received.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let _ = session(stream, &record).await;
            });
        }
    });
    Ok((port, received))
}

/// One SMTP session, answering every command with success.
async fn session(stream: TcpStream, received: &Received) -> anyhow::Result<()> {
    let (reader, mut writer) = stream.into_split();
    let mut lines = BufReader::new(reader);
    writer.write_all(b"220 bench-sink ESMTP\r\n").await?;
    let mut recipients = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_ascii_uppercase();
        let answer: &[u8] = if command.starts_with("EHLO") {
            b"250-bench-sink\r\n250 8BITMIME\r\n"
        } else if command.starts_with("HELO") || command.starts_with("MAIL") {
            recipients.clear();
            b"250 ok\r\n"
        } else if command.starts_with("RCPT") {
            let address = line
                .split_once('<')
                .and_then(|(_, rest)| rest.split_once('>'))
                .map(|(address, _)| address.to_ascii_lowercase());
            recipients.extend(address);
            b"250 ok\r\n"
        } else if command == "DATA" {
            writer.write_all(b"354 go on\r\n").await?;
            loop {
                line.clear();
                if lines.read_line(&mut line).await? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
            }
            received.record(&recipients, Instant::now());
            b"250 queued\r\n"
        } else if command == "QUIT" {
            writer.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            b"250 ok\r\n"
        };
        writer.write_all(answer).await?;
    }
}
