//! Shared by the fault tests that run the real agent: the engine's embedding endpoint served by
//! the dev profile's hashing embedder (no model), for `wardbox records import`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};

use wardbox_rag::embed::HashEmbedder;

/// The engine's embedding endpoint (`POST /api/embed`) answered with the dev profile's hashing
/// embedder, one connection at a time.
pub fn serve_embeddings() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        let embedder = HashEmbedder::new(wardbox_rag::index::DIMS);
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let _ = answer_embed(conn, &embedder);
        }
    });
    addr
}

fn answer_embed(conn: TcpStream, embedder: &HashEmbedder) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let inputs: Vec<String> = match &request["input"] {
        serde_json::Value::String(s) => vec![s.clone()],
        serde_json::Value::Array(items) => items.iter().map(|i| i.as_str().unwrap_or_default().to_owned()).collect(),
        _ => Vec::new(),
    };
    let vectors: Vec<Vec<f32>> = inputs.iter().map(|t| embedder.embed_one(t)).collect();
    let answer = serde_json::json!({ "model": request["model"], "embeddings": vectors }).to_string();
    let mut conn = conn;
    write!(conn, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}", answer.len())
}

