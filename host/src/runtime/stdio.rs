//! Guest stdout and stderr, routed to the host's log line by line.
//!
//! Buffering is capped: a line longer than [`MAX_LINE`] is cut, and a task's
//! output stops being logged after [`MAX_BYTES`] (one warning says so). The last stderr
//! line is kept so a trap's error can quote what the guest said (a Rust
//! panic message, for instance).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use parking_lot::Mutex;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Longest line logged; the rest of a longer line is dropped.
pub const MAX_LINE: usize = 4096;
/// Bytes of the last stderr lines kept for error messages.
const MAX_TAIL: usize = 400;
/// Bytes a task's stdout and stderr may log, together.
pub const MAX_BYTES: usize = 64 * 1024;

/// Cuts `text` to at most `max` bytes on a character boundary.
pub fn clip(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// One of a guest's output streams.
pub struct GuestOutput {
    worker: Arc<str>,
    stream: &'static str,
    tail: Option<Arc<Mutex<String>>>,
    logged: Arc<AtomicUsize>,
}

impl GuestOutput {
    /// The stream `stream` of `worker`, keeping the last stderr lines in
    /// `tail`; `logged` counts the bytes logged for the current task (a warm
    /// instance's count is reset with each task).
    pub fn new(
        worker: Arc<str>,
        stream: &'static str,
        tail: Option<Arc<Mutex<String>>>,
        logged: Arc<AtomicUsize>,
    ) -> Self {
        GuestOutput { worker, stream, tail, logged }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineLogger {
            worker: self.worker.clone(),
            stream: self.stream,
            tail: self.tail.clone(),
            line: Vec::new(),
            logged: self.logged.clone(),
        })
    }
}

struct LineLogger {
    worker: Arc<str>,
    stream: &'static str,
    tail: Option<Arc<Mutex<String>>>,
    line: Vec<u8>,
    logged: Arc<AtomicUsize>,
}

impl LineLogger {
    fn emit(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.line);
        let text = clip(text.trim_end(), MAX_LINE);
        let before = self.logged.fetch_add(text.len(), Ordering::Relaxed);
        if before < MAX_BYTES {
            tracing::info!(target: "anocast::guest", worker = &*self.worker, stream = self.stream, "{text}");
            if before + text.len() >= MAX_BYTES {
                tracing::warn!(target: "anocast::guest", worker = &*self.worker, stream = self.stream, "output cap reached; the rest is dropped");
            }
        }
        // Keep the last lines that say something (Rust's panic hook ends with
        // a note about RUST_BACKTRACE, which says nothing about the failure).
        if let Some(tail) = &self.tail
            && !text.is_empty()
            && !text.starts_with("note: run with `RUST_BACKTRACE")
        {
            let mut tail = tail.lock();
            if !tail.is_empty() {
                tail.push_str(" | ");
            }
            tail.push_str(text);
            if tail.len() > MAX_TAIL {
                let cut = tail.len() - MAX_TAIL;
                let cut = (cut..tail.len()).find(|&i| tail.is_char_boundary(i)).unwrap_or(tail.len());
                tail.drain(..cut);
            }
        }
        self.line.clear();
    }
}

impl AsyncWrite for LineLogger {
    fn poll_write(mut self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        for &byte in buf {
            if byte == b'\n' {
                self.emit();
            } else if self.line.len() < MAX_LINE {
                self.line.push(byte);
            }
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.emit();
        Poll::Ready(Ok(()))
    }
}

impl Drop for LineLogger {
    fn drop(&mut self) {
        self.emit();
    }
}

#[cfg(test)]
mod tests {
    use super::clip;

    #[test]
    fn clip_respects_char_boundaries() {
        assert_eq!(clip("héllo", 2), "h");
        assert_eq!(clip("hello", 10), "hello");
        assert_eq!(clip("hello", 3), "hel");
    }
}
