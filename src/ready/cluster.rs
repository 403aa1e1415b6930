//! Node's cluster protocol, the primary's side: procward is the primary of
//! the workers it starts with `NODE_UNIQUE_ID` and an IPC channel.
//!
//! As in Node's sources:
//! - `lib/internal/cluster/utils.js` `sendHelper`: every message is
//!   `{cmd: "NODE_CLUSTER", ...message, seq}`; an answer carries `ack` =
//!   the `seq` it answers, and the worker runs the callback it kept for it.
//! - `lib/internal/cluster/child.js`: the worker sends `online` once set up;
//!   `server.listen()` becomes `queryServer` (`address`, `port`,
//!   `addressType`, `fd`, `index`, `backlog`, `flags`, ...), answered with
//!   `{errno, key, ack, data}` and, for a shared handle, the listening
//!   socket attached; `listening` once the server listens; `close` (with the
//!   key) when it closes it; `exitedAfterDisconnect` (acknowledged) before
//!   a worker-initiated disconnect.
//! - `lib/internal/cluster/primary.js` `queryServer`: the key is
//!   `${address}:${port}:${addressType}:${fd}:${index}`, as JavaScript
//!   prints those values (`null`, `undefined`).
//! - `lib/internal/child_process.js` `_send`: a message with a handle is
//!   wrapped as `{cmd: "NODE_HANDLE", type: "net.Native", msg}` and written
//!   with the descriptor in SCM_RIGHTS; the receiver answers
//!   `{cmd: "NODE_HANDLE_ACK"}`. libuv makes a TCP or a pipe handle of it by
//!   the socket's family.

use serde_json::{json, Value};

/// `UV_TCP_IPV6ONLY` in a `queryServer`'s `flags` (`lib/net.js`).
const UV_TCP_IPV6ONLY: i64 = 1;

/// A cluster message from a worker.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Its `seq`, which an answer acknowledges.
    pub seq: Option<u64>,
    /// What it asks or says.
    pub act: Act,
}

/// The `act` of a worker's message.
#[derive(Debug, Clone, PartialEq)]
pub enum Act {
    /// The worker is set up.
    Online,
    /// `server.listen()` in the worker: it wants a listening socket.
    QueryServer(Query),
    /// The worker's server listens.
    Listening,
    /// The worker closed the server of this key.
    Close {
        /// The key of the `queryServer` answer.
        key: String,
    },
    /// The worker is disconnecting on its own; it waits for the ack.
    ExitedAfterDisconnect,
    /// The worker's answer to a connection handed to it (`newconn`,
    /// round-robin): whether its server took it.
    Accepted {
        /// The `seq` of the `newconn` it answers.
        ack: Option<u64>,
        /// False when it has no server for the key any more (closing) or
        /// is at its `maxConnections`.
        accepted: bool,
    },
    /// Anything else, by its `act`.
    Other(String),
}

/// What a `queryServer` asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// Node's key for the handle.
    pub key: String,
    /// The address: an IP, a unix socket path, or none (every address).
    pub address: Option<String>,
    /// The port; -1 for a unix socket.
    pub port: i64,
    /// 4, 6, -1 (a unix socket), or `udp4`/`udp6`.
    pub address_type: AddressType,
    /// `listen({fd})`: a descriptor number in the worker.
    pub fd: Option<i64>,
    /// The listen(2) backlog asked for.
    pub backlog: Option<i32>,
    /// IPV6_V6ONLY asked for (`ipv6Only: true`).
    pub ipv6_only: bool,
}

/// `addressType` in a `queryServer`.
#[derive(Debug, Clone, PartialEq)]
pub enum AddressType {
    /// TCP over IPv4.
    Ip4,
    /// TCP over IPv6.
    Ip6,
    /// A unix socket (or a descriptor).
    Pipe,
    /// Something procward does not serve (UDP: `udp4`, `udp6`).
    Other(String),
}

/// The fields of a worker's message, as JavaScript would print each one
/// (`undefined` when absent), read by the IPC parser.
pub trait Fields {
    /// The field `name`: `None` when absent.
    fn raw(&self, name: &str) -> Option<&serde_json::value::RawValue>;
}

/// A JSON value as JavaScript's template strings print it.
fn js(raw: Option<&serde_json::value::RawValue>) -> String {
    let Some(raw) = raw else {
        return "undefined".into();
    };
    match serde_json::from_str::<std::borrow::Cow<'_, str>>(raw.get()) {
        Ok(s) => s.into_owned(),
        Err(_) => raw.get().to_string(),
    }
}

fn int(raw: Option<&serde_json::value::RawValue>) -> Option<i64> {
    let v: f64 = serde_json::from_str(raw?.get()).ok()?;
    (v.fract() == 0.0 && v.abs() < 1e15).then_some(v as i64)
}

fn string(raw: Option<&serde_json::value::RawValue>) -> Option<String> {
    serde_json::from_str::<String>(raw?.get()).ok()
}

/// Reads a `NODE_CLUSTER` message.
pub fn request(f: &impl Fields) -> Request {
    let seq = int(f.raw("seq")).and_then(|s| u64::try_from(s).ok());
    let act = match string(f.raw("act")).as_deref() {
        Some("online") => Act::Online,
        Some("listening") => Act::Listening,
        Some("exitedAfterDisconnect") => Act::ExitedAfterDisconnect,
        Some("close") => Act::Close {
            key: js(f.raw("key")),
        },
        Some("queryServer") => {
            let address_type = match js(f.raw("addressType")).as_str() {
                "4" => AddressType::Ip4,
                "6" => AddressType::Ip6,
                "-1" => AddressType::Pipe,
                other => AddressType::Other(other.to_string()),
            };
            let key = [
                js(f.raw("address")),
                js(f.raw("port")),
                js(f.raw("addressType")),
                js(f.raw("fd")),
                js(f.raw("index")),
            ]
            .join(":");
            let flags = int(f.raw("flags")).unwrap_or(0);
            let ipv6_only = flags & UV_TCP_IPV6ONLY != 0
                || f.raw("ipv6Only").is_some_and(|r| r.get() == "true");
            Act::QueryServer(Query {
                key,
                address: string(f.raw("address")),
                port: int(f.raw("port")).unwrap_or(0),
                address_type,
                fd: int(f.raw("fd")).filter(|fd| *fd >= 0),
                backlog: int(f.raw("backlog")).and_then(|b| i32::try_from(b).ok()),
                ipv6_only,
            })
        }
        Some(other) => Act::Other(other.to_string()),
        // child.js onconnection: `{ack: message.seq, accepted}`.
        None if f.raw("accepted").is_some() => Act::Accepted {
            ack: int(f.raw("ack")).and_then(|s| u64::try_from(s).ok()),
            accepted: f.raw("accepted").is_some_and(|r| r.get() == "true"),
        },
        None => Act::Other(String::new()),
    };
    Request { seq, act }
}

/// The primary's answer to message `ack`, numbered `seq`, with `fields`.
pub fn answer(seq: u64, ack: Option<u64>, fields: Value) -> Value {
    let mut m = json!({"cmd": "NODE_CLUSTER", "seq": seq});
    if let Some(ack) = ack {
        m["ack"] = ack.into();
    }
    if let (Value::Object(m), Value::Object(f)) = (&mut m, fields) {
        m.extend(f);
    }
    m
}

/// The answer to a `queryServer`: `errno` 0 and the socket attached, or a
/// negative errno (libuv's `UV_E*`) and no socket.
pub fn query_answer(seq: u64, ack: Option<u64>, key: &str, errno: i32) -> Value {
    answer(seq, ack, json!({"errno": errno, "key": key, "data": null}))
}

/// The answer to a `queryServer` for a round-robin socket (`primary.js`
/// `queryServer` with `RoundRobinHandle.add`): no socket attached, `errno`
/// null, and the socket's address as `sockname` for a TCP socket, which
/// the worker's `server.address()` returns.
pub fn round_robin_answer(seq: u64, ack: Option<u64>, key: &str, sockname: Option<Value>) -> Value {
    let mut fields = json!({"errno": null, "key": key, "data": null});
    if let Some(s) = sockname {
        fields["sockname"] = s;
    }
    answer(seq, ack, fields)
}

/// A connection handed to a worker (`RoundRobinHandle.handoff`), to be
/// wrapped by [`with_handle`] with the connection attached.
pub fn new_connection(seq: u64, key: &str) -> Value {
    answer(seq, None, json!({"act": "newconn", "key": key}))
}

/// `msg` wrapped to travel with a descriptor, as `child_process` wraps a
/// raw TCP or pipe handle.
pub fn with_handle(msg: Value) -> Value {
    json!({"cmd": "NODE_HANDLE", "type": "net.Native", "msg": msg})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ready::node_ipc::{parse, Line};

    fn cluster(text: &str) -> Request {
        match parse(text.as_bytes()) {
            Line::Cluster(r) => r,
            other => panic!("not a cluster message: {other:?}"),
        }
    }

    #[test]
    fn a_query_server_is_read_with_nodes_key() {
        // Node 20's `server.listen(3000)` in a worker.
        let r = cluster(
            r#"{"cmd":"NODE_CLUSTER","act":"queryServer","index":0,"data":null,"address":null,"port":3000,"addressType":4,"backlog":511,"seq":1}"#,
        );
        assert_eq!(r.seq, Some(1));
        let Act::QueryServer(q) = r.act else { panic!() };
        assert_eq!(q.key, "null:3000:4:undefined:0");
        assert_eq!(q.address, None);
        assert_eq!(q.address_type, AddressType::Ip4);
        assert_eq!(q.backlog, Some(511));
        assert!(!q.ipv6_only);

        let r = cluster(
            r#"{"cmd":"NODE_CLUSTER","act":"queryServer","index":1,"address":"/tmp/a.sock","port":-1,"addressType":-1,"fd":null,"flags":0,"seq":4}"#,
        );
        let Act::QueryServer(q) = r.act else { panic!() };
        assert_eq!(q.key, "/tmp/a.sock:-1:-1:null:1");
        assert_eq!(q.address_type, AddressType::Pipe);

        let r = cluster(
            r#"{"cmd":"NODE_CLUSTER","act":"queryServer","address":"::","port":80,"addressType":6,"flags":1,"seq":2}"#,
        );
        let Act::QueryServer(q) = r.act else { panic!() };
        assert!(q.ipv6_only);
    }

    #[test]
    fn other_acts_are_read() {
        assert_eq!(
            cluster(r#"{"cmd":"NODE_CLUSTER","act":"online","seq":0}"#).act,
            Act::Online
        );
        assert_eq!(
            cluster(
                r#"{"cmd":"NODE_CLUSTER","act":"close","key":"null:3000:4:undefined:0","seq":3}"#
            )
            .act,
            Act::Close {
                key: "null:3000:4:undefined:0".into()
            }
        );
        assert_eq!(
            cluster(r#"{"cmd":"NODE_CLUSTER","act":"listening","port":3000,"seq":2}"#).act,
            Act::Listening
        );
    }

    #[test]
    fn a_workers_answer_to_a_connection_is_read() {
        assert_eq!(
            cluster(r#"{"cmd":"NODE_CLUSTER","ack":5,"accepted":true,"seq":9}"#).act,
            Act::Accepted {
                ack: Some(5),
                accepted: true
            }
        );
        assert_eq!(
            cluster(r#"{"cmd":"NODE_CLUSTER","ack":6,"accepted":false,"seq":10}"#).act,
            Act::Accepted {
                ack: Some(6),
                accepted: false
            }
        );
    }

    #[test]
    fn an_answer_acknowledges_the_question() {
        let a = with_handle(query_answer(7, Some(1), "null:3000:4:undefined:0", 0));
        assert_eq!(a["cmd"], "NODE_HANDLE");
        assert_eq!(a["type"], "net.Native");
        assert_eq!(a["msg"]["cmd"], "NODE_CLUSTER");
        assert_eq!(a["msg"]["ack"], 1);
        assert_eq!(a["msg"]["seq"], 7);
        assert_eq!(a["msg"]["errno"], 0);
        assert_eq!(a["msg"]["key"], "null:3000:4:undefined:0");
    }
}
