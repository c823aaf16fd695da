//! The counter web service started in-process on an ephemeral port, and an HTTP client.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use counterstack::web::{self, Config, WebArgs};

/// A running service; shut down (drained) on drop or with [`WebServer::stop`].
pub struct WebServer {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), web::Error>>>,
}

impl WebServer {
    /// Start with `counterstack web` flags (e.g. `["--redis-url", url]`). Unless given,
    /// the drain delay is 0 and DRAIN_SECONDS 2 so tests end fast.
    pub async fn start(flags: &[&str]) -> Self {
        let mut argv = vec!["web"];
        for (flag, default) in [("--drain-delay-ms", "0"), ("--drain-seconds", "2")] {
            if !flags.contains(&flag) {
                argv.extend([flag, default]);
            }
        }
        argv.extend_from_slice(flags);
        let args = WebArgs::try_parse_from(argv).expect("valid flags");
        let cfg = Config::from_args(&args).expect("valid config");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind web");
        let addr = listener.local_addr().expect("web addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(web::serve(cfg, listener, async move {
            let _ = rx.await;
        }));
        Self { addr, stop: Some(tx), task: Some(task) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Poll `/readyz` until it answers `want` (panics after `timeout`).
    pub async fn wait_ready(&self, want: u16, timeout: Duration) {
        let c = client();
        let start = Instant::now();
        loop {
            if let Ok(r) = c.get(self.url("/readyz")).send().await
                && r.status().as_u16() == want
            {
                return;
            }
            assert!(start.elapsed() < timeout, "/readyz never answered {want}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Trigger the drain and wait for `serve` to return.
    pub async fn stop(mut self) -> Result<(), web::Error> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(t) => t.await.expect("serve task"),
            None => Ok(()),
        }
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("http client")
}

/// `(status, json body)` of a request.
pub async fn call(c: &reqwest::Client, method: &str, url: &str) -> (u16, serde_json::Value) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let r = c.request(m, url).send().await.expect("request sent");
    let status = r.status().as_u16();
    let body = r.json().await.unwrap_or(serde_json::Value::Null);
    (status, body)
}

/// How long a test waits for the service to answer as expected (readiness, recovery).
pub const READY: Duration = Duration::from_secs(15);

/// Send `method url` until it answers `want` (at most [`READY`]); the last body.
pub async fn until_status(c: &reqwest::Client, method: &str, url: &str, want: u16) -> serde_json::Value {
    let deadline = Instant::now() + READY;
    loop {
        let (status, body) = call(c, method, url).await;
        if status == want {
            return body;
        }
        assert!(Instant::now() < deadline, "{method} {url}: still {status} {body}, waiting for {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A minimal HTTP/1.1 keep-alive client over one TCP connection: cheap enough (even in a
/// debug build) to drive thousands of requests from many tasks.
pub struct RawClient {
    stream: tokio::io::BufReader<tokio::net::TcpStream>,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Self> {
        let s = tokio::net::TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(Self { stream: tokio::io::BufReader::new(s) })
    }

    /// Send one request; returns `(status, body, connection_close)`.
    pub async fn request(&mut self, method: &str, path: &str) -> std::io::Result<(u16, String, bool)> {
        let r = self.send(method, path, &[]).await?;
        Ok((r.status, r.body, r.close))
    }

    /// Send one request with extra `headers`.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> std::io::Result<RawResponse> {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n");
        for (name, value) in headers {
            req.push_str(&format!("{name}: {value}\r\n"));
        }
        req.push_str("\r\n");
        self.stream.get_mut().write_all(req.as_bytes()).await?;
        let mut line = String::new();
        if self.stream.read_line(&mut line).await? == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed before status line"));
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let (mut len, mut close, mut headers) = (0usize, false, Vec::new());
        loop {
            line.clear();
            if self.stream.read_line(&mut line).await? == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed in headers"));
            }
            let l = line.trim_end().to_ascii_lowercase();
            if l.is_empty() {
                break;
            }
            if let Some(v) = l.strip_prefix("content-length:") {
                len = v.trim().parse().map_err(std::io::Error::other)?;
            }
            if l == "connection: close" {
                close = true;
            }
            if let Some((name, value)) = l.split_once(':') {
                headers.push((name.trim().to_string(), value.trim().to_string()));
            }
        }
        let mut body = vec![0; len];
        self.stream.read_exact(&mut body).await?;
        Ok(RawResponse { status, body: String::from_utf8_lossy(&body).into_owned(), close, headers })
    }
}

/// What [`RawClient::send`] read.
pub struct RawResponse {
    pub status: u16,
    pub body: String,
    pub close: bool,
    /// Header names and values, lowercased.
    pub headers: Vec<(String, String)>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// A gauge or counter of the service's `/metrics` (0 when absent), e.g.
/// `counterstack_web_http_requests_in_flight`.
pub async fn metric(web: &WebServer, name: &str) -> f64 {
    let text = client().get(web.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0.0)
}

/// Wait until `n` API requests are in flight in the service (the metrics request that
/// asks is not counted); panics after [`READY`].
pub async fn wait_in_flight(web: &WebServer, n: usize) {
    let deadline = Instant::now() + READY;
    loop {
        let in_flight = metric(web, "counterstack_web_http_requests_in_flight").await - 1.0;
        if in_flight >= n as f64 {
            return;
        }
        assert!(Instant::now() < deadline, "{in_flight} requests in flight, waiting for {n}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The `value` of a `{"value":N}` body.
pub fn value_of(body: &str) -> i64 {
    let v: serde_json::Value = serde_json::from_str(body).expect("json body");
    v["value"].as_i64().expect("value field")
}
