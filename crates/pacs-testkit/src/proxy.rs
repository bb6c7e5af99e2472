//! A TCP forwarder on 127.0.0.1 that a test can cut, stall and restore: an engine (PostgreSQL,
//! say) that goes away under a running server, or stops answering while its connections stay
//! open, and comes back, without stopping the real engine that other tests share.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

pub struct TcpProxy {
    pub port: u16,
    cut: Arc<AtomicBool>,
    /// Bytes are swallowed in both directions and new connections held unanswered.
    stalled: Arc<AtomicBool>,
    /// Both ends of every forwarded connection, to shut down when cut.
    live: Arc<Mutex<Vec<TcpStream>>>,
    stopped: Arc<AtomicBool>,
}

impl TcpProxy {
    /// Forwards connections to `target` from a free port on 127.0.0.1.
    pub fn start(target: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let proxy = TcpProxy {
            port,
            cut: Arc::new(AtomicBool::new(false)),
            stalled: Arc::new(AtomicBool::new(false)),
            live: Arc::new(Mutex::new(Vec::new())),
            stopped: Arc::new(AtomicBool::new(false)),
        };
        let (cut, live, stopped) = (proxy.cut.clone(), proxy.live.clone(), proxy.stopped.clone());
        let stalled = proxy.stalled.clone();
        thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        if cut.load(Ordering::Relaxed) {
                            // Refused as a dead host's port would be: closed at once.
                            let _ = client.shutdown(Shutdown::Both);
                            continue;
                        }
                        if stalled.load(Ordering::Relaxed) {
                            // Accepted, then never answered, as a frozen host's would be.
                            live.lock().unwrap().push(client);
                            continue;
                        }
                        let Ok(server) = TcpStream::connect(target) else {
                            continue;
                        };
                        forward(client, server, &live, &stalled);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(10));
                    }
                    Err(_) => break,
                }
            }
        });
        proxy
    }

    /// Closes every forwarded connection and refuses new ones until [`Self::restore`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::Relaxed);
        for stream in self.live.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Keeps every connection open but passes nothing more either way, and holds new ones
    /// unanswered, until [`Self::restore`]: an engine that stops answering without closing.
    pub fn stall(&self) {
        self.stalled.store(true, Ordering::Relaxed);
    }

    /// Forwards again (new connections; a stalled one has lost what it swallowed).
    pub fn restore(&self) {
        self.cut.store(false, Ordering::Relaxed);
        self.stalled.store(false, Ordering::Relaxed);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::Relaxed);
        self.cut();
    }
}

fn forward(client: TcpStream, server: TcpStream, live: &Mutex<Vec<TcpStream>>, stalled: &Arc<AtomicBool>) {
    let mut streams = live.lock().unwrap();
    streams.push(client.try_clone().unwrap());
    streams.push(server.try_clone().unwrap());
    drop(streams);
    let pipe = |mut from: TcpStream, mut to: TcpStream| {
        let stalled = stalled.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) if stalled.load(Ordering::Relaxed) => {}
                    Ok(n) => {
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = to.shutdown(Shutdown::Both);
            let _ = from.shutdown(Shutdown::Both);
        });
    };
    pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
    pipe(server, client);
}
