//! Probes for apps that signal nothing: `tcp:PORT` is ready once a connect
//! to 127.0.0.1:PORT succeeds, `http://HOST:PORT/PATH` once a GET answers
//! 2xx. Polled every [`INTERVAL`] until the first success, which becomes
//! [`Event::Ready`]; listen_timeout bounds the wait, as for other sources.
//!
//! The HTTP check is a minimal HTTP/1.0 request (RFC 1945): one request,
//! `Connection: close`, and only the status line of the answer is read.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::{deliver, Event, Report};
use crate::config::ReadySource;

/// Time between two attempts.
pub const INTERVAL: Duration = Duration::from_millis(100);

/// Time one attempt may take.
const ATTEMPT: Duration = Duration::from_secs(1);

/// Polls `source` until it answers, then reports process `pid` ready.
pub async fn run(source: ReadySource, pid: i32, tx: mpsc::Sender<Report>) {
    let target = match &source {
        ReadySource::Tcp(port) => Target::Tcp(format!("127.0.0.1:{port}")),
        ReadySource::Http(url) => match Url::parse(url) {
            Some(u) => Target::Http(u),
            None => {
                tracing::error!(
                    pid,
                    url,
                    "ready URL is not http://HOST[:PORT][/PATH]; it will never answer"
                );
                return;
            }
        },
        ReadySource::Started | ReadySource::NodeIpc | ReadySource::SdNotify => return,
    };
    loop {
        if matches!(timeout(ATTEMPT, target.check()).await, Ok(true)) {
            deliver(
                &tx,
                Report {
                    pid,
                    event: Event::Ready,
                },
            )
            .await;
            return;
        }
        tokio::time::sleep(INTERVAL).await;
    }
}

enum Target {
    Tcp(String),
    Http(Url),
}

impl Target {
    async fn check(&self) -> bool {
        match self {
            Target::Tcp(addr) => TcpStream::connect(addr.as_str()).await.is_ok(),
            Target::Http(url) => http_ok(url).await.unwrap_or(false),
        }
    }
}

/// The parts of an `http://` URL a GET needs.
#[derive(Debug, PartialEq)]
pub struct Url {
    /// `host:port`, port 80 when absent.
    pub authority: String,
    /// The `Host` header.
    pub host: String,
    /// Path and query, `/` when absent.
    pub path: String,
}

impl Url {
    /// Parses `http://HOST[:PORT][/PATH]`; `None` for anything else.
    pub fn parse(url: &str) -> Option<Url> {
        let rest = url.strip_prefix("http://")?;
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if host.is_empty() || host.contains('@') {
            return None;
        }
        let has_port = match host.rfind(':') {
            Some(i) => !host[i..].contains(']'),
            None => false,
        };
        let authority = if has_port {
            host.to_string()
        } else {
            format!("{host}:80")
        };
        Some(Url {
            authority,
            host: host.to_string(),
            path: path.to_string(),
        })
    }
}

async fn http_ok(url: &Url) -> std::io::Result<bool> {
    let mut s = TcpStream::connect(url.authority.as_str()).await?;
    let req = format!(
        "GET {} HTTP/1.0\r\nHost: {}\r\nUser-Agent: procward\r\nConnection: close\r\n\r\n",
        url.path, url.host
    );
    s.write_all(req.as_bytes()).await?;
    // "HTTP/1.x NNN": 12 bytes are enough.
    let mut head = [0u8; 12];
    let mut got = 0;
    while got < head.len() {
        match s.read(&mut head[got..]).await? {
            0 => break,
            n => got += n,
        }
    }
    Ok(status_is_2xx(&head[..got]))
}

/// Whether a status line starts `HTTP/1.x 2NN`.
pub fn status_is_2xx(head: &[u8]) -> bool {
    head.len() >= 12
        && head.starts_with(b"HTTP/1.")
        && head[8] == b' '
        && head[9] == b'2'
        && head[10].is_ascii_digit()
        && head[11].is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        assert_eq!(
            Url::parse("http://127.0.0.1:8080/healthz?x=1"),
            Some(Url {
                authority: "127.0.0.1:8080".into(),
                host: "127.0.0.1:8080".into(),
                path: "/healthz?x=1".into()
            })
        );
        assert_eq!(
            Url::parse("http://localhost").map(|u| u.authority),
            Some("localhost:80".into())
        );
        assert_eq!(
            Url::parse("http://[::1]:9000/").map(|u| u.authority),
            Some("[::1]:9000".into())
        );
        assert_eq!(
            Url::parse("http://[::1]/").map(|u| u.authority),
            Some("[::1]:80".into())
        );
        assert!(Url::parse("https://x/").is_none());
    }

    #[test]
    fn only_2xx_is_ready() {
        assert!(status_is_2xx(b"HTTP/1.1 204 No Content"));
        assert!(!status_is_2xx(b"HTTP/1.1 503 Unavailable"));
        assert!(!status_is_2xx(b"HTTP/1.1 2"));
    }
}
