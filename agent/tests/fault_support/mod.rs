//! Shared by the fault tests that run the real agent: plain HTTP to it, the `wardbox` command,
//! the store opened as the operator commands open it, the engine's embedding endpoint served
//! by the dev profile's hashing embedder (no model), for `wardbox records import`, and a small
//! tmpfs to put the whole box on, with a file to fill it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use wardbox::config::Config;
use wardbox::stages::unlock::unlocker;
use wardbox::store::Store;
use wardbox_rag::embed::HashEmbedder;

/// A size-limited tmpfs, unmounted when dropped.
pub struct SmallVolume(PathBuf);

impl SmallVolume {
    pub fn mount(at: &Path, size_mib: u32) -> Self {
        std::fs::create_dir_all(at).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs", at.to_str().expect("utf8")])
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "THIS TEST NEEDS ROOT (or CAP_SYS_ADMIN) TO MOUNT A {size_mib} MiB TMPFS AT {} AND CANNOT RUN WITHOUT IT: {}",
            at.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Self(at.to_path_buf())
    }
}

impl Drop for SmallVolume {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A child process killed and reaped when dropped (a failed assertion leaves nothing running).
pub struct Agent(pub Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `wardbox dev` on `base`, listening on `addr`, with no engine (`no_engine` names a path where
/// none is: these tests are about the store, the audit chain and the data volume), once it
/// answers `/health` with 200. Fails if it exits first or takes over 60 s; `what` names it.
pub fn start_dev_agent(base: &Path, addr: SocketAddr, no_engine: &Path, what: &str) -> Agent {
    let mut agent = Agent(
        Command::new(env!("CARGO_BIN_EXE_wardbox"))
            .args(["dev", "--base", base.to_str().expect("utf8"), "--listen", &addr.to_string()])
            .env("WARDBOX_ENGINE_BIN", no_engine)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start wardbox dev"),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !http(addr, &format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"))
        .is_ok_and(|(head, _)| head.starts_with("HTTP/1.1 200"))
    {
        assert!(agent.0.try_wait().expect("wait").is_none(), "{what} exited before serving");
        assert!(std::time::Instant::now() < deadline, "{what} did not serve within 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    agent
}

/// Write a file until the filesystem has no byte left (large writes, then smaller ones).
pub fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).expect("filler");
    let mut written = 0u64;
    for size in [1 << 20, 64 << 10, 4 << 10, 512, 1] {
        let chunk = vec![0x5au8; size];
        while f.write_all(&chunk).is_ok() {
            written += size as u64;
        }
    }
    let _ = f.sync_all();
    written
}

/// Write a file of `bytes` bytes (on a tmpfs, each byte written takes a byte of the volume).
pub fn fill_bytes(path: &Path, bytes: u64) {
    let mut f = std::fs::File::create(path).expect("filler");
    let chunk = vec![0x5au8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n]).expect("write the filler");
        left -= n as u64;
    }
    f.sync_all().expect("sync the filler");
}

/// One HTTP/1.1 request; returns the raw response head and body.
pub fn http(addr: SocketAddr, request: &str) -> std::io::Result<(String, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.write_all(request.as_bytes())?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Ok((head.to_string(), body.to_string()))
}

/// The value of the cookie `name` the response head sets (empty when it sets none).
pub fn cookie(head: &str, name: &str) -> String {
    head.lines()
        .filter_map(|l| l.strip_prefix("set-cookie: ").or_else(|| l.strip_prefix("Set-Cookie: ")))
        .find_map(|c| c.strip_prefix(&format!("{name}=")))
        .and_then(|rest| rest.split(';').next())
        .unwrap_or_default()
        .to_string()
}

/// Run `wardbox ARGS -c CONFIG` with `stdin` as its standard input.
pub fn wardbox(args: &[&str], config: &Path, stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wardbox"))
        .args(args)
        .args(["-c", config.to_str().expect("utf8")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run wardbox");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("stdin");
    child.wait_with_output().expect("output")
}

/// A command's standard output and error together.
pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The box's store, opened as the operator commands open it.
pub fn open_store(config: &Path) -> Store {
    let config = Config::load(config).expect("config");
    let volume = unlocker(&config.volume, &config.state_dir).open_for_cli().expect("unlock");
    Store::open_existing(&volume.data_dir.join(&config.store.file_name), &volume.store_key).expect("the store opens")
}

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

