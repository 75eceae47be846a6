//! A tiny UDP nameserver on loopback answering crafted responses, for the DNS source's tests and
//! the integration tests that run every default source.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hickory_resolver::Name;
use hickory_resolver::proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_resolver::proto::rr::rdata::{MX, TXT};
use hickory_resolver::proto::rr::{RData, Record, RecordType};
use tokio::net::UdpSocket;

/// What the fake nameserver knows: records by (name, type), and names that do not exist.
#[derive(Default, Clone)]
pub struct Zone {
    pub records: HashMap<(String, RecordType), Vec<RData>>,
    pub nx: Vec<String>,
    /// Answer SERVFAIL to everything.
    pub servfail: bool,
}

impl Zone {
    pub fn mx(mut self, name: &str, pref: u16, host: &str) -> Self {
        let rdata = RData::MX(MX::new(pref, Name::from_str(host).expect("valid name")));
        self.records
            .entry((name.into(), RecordType::MX))
            .or_default()
            .push(rdata);
        self
    }
    pub fn txt(mut self, name: &str, text: &str) -> Self {
        let rdata = RData::TXT(TXT::new(vec![text.to_string()]));
        self.records
            .entry((name.into(), RecordType::TXT))
            .or_default()
            .push(rdata);
        self
    }
}

fn answer(zone: &Zone, query: &Message) -> Message {
    let mut reply = Message::new();
    reply
        .set_id(query.id())
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .set_recursion_available(true);
    for q in query.queries() {
        reply.add_query(q.clone());
        let name = q.name().to_ascii().to_lowercase();
        if zone.servfail {
            reply.set_response_code(ResponseCode::ServFail);
        } else if zone.nx.contains(&name) {
            reply.set_response_code(ResponseCode::NXDomain);
        } else if let Some(rdatas) = zone.records.get(&(name, q.query_type())) {
            for r in rdatas {
                reply.add_answer(Record::from_rdata(q.name().clone(), 300, r.clone()));
            }
        }
    }
    reply
}

/// Serves `zone` over UDP on loopback; counts the queries it received.
pub async fn nameserver(zone: Zone) -> (SocketAddr, Arc<AtomicUsize>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
    let addr = socket.local_addr().expect("bound address");
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
            counter.fetch_add(1, Ordering::SeqCst);
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            if let Ok(bytes) = answer(&zone, &query).to_vec() {
                let _ = socket.send_to(&bytes, peer).await;
            }
        }
    });
    (addr, seen)
}
