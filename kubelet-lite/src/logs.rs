//! The kubelet's `/containerLogs/{namespace}/{pod}/{container}` endpoint over the runtime's
//! log buffers, with `follow`, `tailLines`, `timestamps`, `limitBytes`, `previous` and
//! `sinceSeconds`. Pure: the host serves the bytes and, for `follow`, calls
//! [`render_from`] again with the returned cursor until the container stops.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use crate::runtime::{LogLine, Runtime};
use crate::time::Time;

/// A parsed containerLogs request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogRequest {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub tail_lines: Option<u64>,
    pub limit_bytes: Option<u64>,
    pub since_seconds: Option<u64>,
}

/// Why a containerLogs request failed; each maps to an HTTP status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogError {
    /// The path is not `/containerLogs/{ns}/{pod}/{container}`.
    NotFound,
    /// A query parameter has a bad value.
    BadParam(String),
    /// No such container (or no previous instance).
    NoContainer(String),
}

impl LogError {
    /// The HTTP status for this error.
    pub fn status(&self) -> u16 {
        match self {
            LogError::NotFound | LogError::NoContainer(_) => 404,
            LogError::BadParam(_) => 400,
        }
    }
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogError::NotFound => f.write_str("not found"),
            LogError::BadParam(p) => write!(f, "invalid query parameter {p}"),
            LogError::NoContainer(m) => f.write_str(m),
        }
    }
}

/// A path segment or query value: `%XX` escapes and `+` as space; bad escapes stay as they are.
fn unescape(s: &str) -> String {
    wire::percent::decode(s, true)
}

impl LogRequest {
    /// Parses a request target such as `/containerLogs/default/p/app?tailLines=5&follow=true`.
    pub fn parse(target: &str) -> Result<LogRequest, LogError> {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let parts: Vec<&str> = path.split('/').collect();
        let ["", "containerLogs", ns, pod, container] = parts.as_slice() else {
            return Err(LogError::NotFound);
        };
        if ns.is_empty() || pod.is_empty() || container.is_empty() {
            return Err(LogError::NotFound);
        }
        let mut r = LogRequest {
            namespace: unescape(ns),
            pod: unescape(pod),
            container: unescape(container),
            ..Default::default()
        };
        for kv in query.split('&').filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, "true"));
            let v = unescape(v);
            let flag = || match v.as_str() {
                "" | "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err(LogError::BadParam(k.to_string())),
            };
            let num = || v.parse::<u64>().map_err(|_| LogError::BadParam(k.to_string()));
            match k {
                "follow" => r.follow = flag()?,
                "previous" => r.previous = flag()?,
                "timestamps" => r.timestamps = flag()?,
                "tailLines" => r.tail_lines = Some(num()?),
                "limitBytes" => r.limit_bytes = Some(num()?).filter(|n| *n > 0),
                "sinceSeconds" => r.since_seconds = Some(num()?),
                _ => {}
            }
        }
        Ok(r)
    }
}

/// Where a follow stream stands: the container instance followed, the number of its next
/// line, and the bytes already sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    pub instance: u64,
    pub line: u64,
    pub bytes_sent: u64,
}

/// A rendered piece of log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogChunk {
    pub bytes: Vec<u8>,
    pub cursor: Cursor,
    /// True when nothing more will come (container stopped, not following, or limit reached).
    pub done: bool,
}

fn render_line(out: &mut Vec<u8>, l: &LogLine, timestamps: bool) {
    if timestamps {
        out.extend_from_slice(l.time.rfc3339_nano().as_bytes());
        out.push(b' ');
    }
    out.extend_from_slice(l.text.as_bytes());
    out.push(b'\n');
}

/// Renders a request: the first call passes `cursor = None` (applies tailLines and
/// sinceSeconds); follow-up calls pass the returned cursor and get only new lines.
pub fn render_from(
    req: &LogRequest,
    rt: &dyn Runtime,
    now: Time,
    cursor: Option<Cursor>,
) -> Result<LogChunk, LogError> {
    let view = rt.logs(&req.namespace, &req.pod, &req.container, req.previous).ok_or_else(|| {
        LogError::NoContainer(if req.previous {
            format!("previous terminated container \"{}\" in pod \"{}\" not found", req.container, req.pod)
        } else {
            format!("container \"{}\" in pod \"{}\" is not available", req.container, req.pod)
        })
    })?;
    let first = cursor.is_none();
    let kept = view.lines.len() as u64;
    let mut cur = cursor.unwrap_or(Cursor { instance: view.instance, line: view.first, bytes_sent: 0 });
    if cur.instance != view.instance {
        // The instance followed has ended and the container was started again.
        return Ok(LogChunk { bytes: Vec::new(), cursor: cur, done: true });
    }
    // Lines the runtime dropped while the stream waited are skipped.
    let mut start =
        usize::try_from(cur.line.saturating_sub(view.first).min(kept)).unwrap_or(view.lines.len());
    if first {
        if let Some(n) = req.tail_lines {
            start = view.lines.len().saturating_sub(usize::try_from(n).unwrap_or(usize::MAX));
        }
        if let Some(s) = req.since_seconds {
            let from = Time(now.micros().saturating_sub(s.saturating_mul(1_000_000)));
            while view.lines.get(start).is_some_and(|l| l.time < from) {
                start += 1;
            }
        }
    }
    let mut bytes = Vec::new();
    for l in view.lines.get(start..).unwrap_or(&[]) {
        render_line(&mut bytes, l, req.timestamps);
    }
    cur.line = view.first + kept;
    let mut limited = false;
    if let Some(limit) = req.limit_bytes {
        let left = limit.saturating_sub(cur.bytes_sent);
        if bytes.len() as u64 >= left {
            bytes.truncate(usize::try_from(left).unwrap_or(usize::MAX));
            limited = true;
        }
    }
    cur.bytes_sent = cur.bytes_sent.saturating_add(bytes.len() as u64);
    Ok(LogChunk { bytes, cursor: cur, done: limited || !req.follow || !view.running })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{ContainerRef, LogView};
    use crate::sim::SimRuntime;
    use crate::types::Container;

    fn setup(script: &str) -> (SimRuntime, Time) {
        let t0 = Time::from_secs(1_733_911_200);
        (SimRuntime::with_one_container(script, t0), t0)
    }

    #[test]
    fn parses_requests() {
        let r = LogRequest::parse(
            "/containerLogs/default/p/app?follow=true&tailLines=2&timestamps=1&limitBytes=10&previous=false",
        )
        .unwrap();
        assert_eq!((r.namespace.as_str(), r.pod.as_str(), r.container.as_str()), ("default", "p", "app"));
        assert!(r.follow && r.timestamps && !r.previous);
        assert_eq!((r.tail_lines, r.limit_bytes), (Some(2), Some(10)));
        assert_eq!(LogRequest::parse("/containerLogs/default/p"), Err(LogError::NotFound));
        assert_eq!(LogRequest::parse("/other/a/b/c"), Err(LogError::NotFound));
        assert!(matches!(LogRequest::parse("/containerLogs/a/b/c?tailLines=x"), Err(LogError::BadParam(_))));
    }

    #[test]
    fn renders_tail_timestamps_and_limits() {
        let (mut rt, t0) = setup("echo one; echo two; sleep 1; echo three; exit 0");
        rt.advance_all(t0.plus_secs(5));
        let req = |q: &str| LogRequest::parse(&format!("/containerLogs/default/p/app?{q}")).unwrap();
        let all = render_from(&req(""), &rt, t0, None).unwrap();
        assert_eq!(all.bytes, b"one\ntwo\nthree\n");
        assert!(all.done);
        assert_eq!(render_from(&req("tailLines=1"), &rt, t0, None).unwrap().bytes, b"three\n");
        assert_eq!(render_from(&req("limitBytes=5"), &rt, t0, None).unwrap().bytes, b"one\nt");
        let ts = render_from(&req("timestamps=true&tailLines=1"), &rt, t0, None).unwrap();
        assert_eq!(ts.bytes, b"2024-12-11T10:00:01.000000000Z three\n");
        let since = render_from(&req("sinceSeconds=1"), &rt, t0.plus_secs(2), None).unwrap();
        assert_eq!(since.bytes, b"three\n");
        assert!(matches!(render_from(&req("previous=true"), &rt, t0, None), Err(LogError::NoContainer(_))));
    }

    /// A runtime holding one fixed view.
    struct Fixed(LogView);

    impl Runtime for Fixed {
        fn start_container(
            &mut self,
            _: &ContainerRef,
            _: &crate::types::Pod,
            _: &Container,
            _: Time,
        ) -> Result<String, crate::runtime::RuntimeError> {
            Err(crate::runtime::RuntimeError::Start("fixed".into()))
        }
        fn stop_container(&mut self, _: &str, _: u64, _: Time) {}
        fn poll(&mut self, _: &str, _: Time) -> Option<crate::runtime::RuntimeState> {
            None
        }
        fn remove_pod(&mut self, _: &str) {}
        fn logs(&self, _: &str, _: &str, _: &str, _: bool) -> Option<LogView> {
            Some(self.0.clone())
        }
        fn image_status(&self, _: &str) -> Option<crate::runtime::ImageInfo> {
            None
        }
        fn pull_image(
            &mut self,
            _: &str,
            _: &[crate::runtime::RegistryAuth],
            _: Time,
        ) -> crate::runtime::PullStatus {
            crate::runtime::PullStatus::Failed("fixed".into())
        }
        fn list_images(&self) -> Vec<crate::runtime::ImageInfo> {
            Vec::new()
        }
    }

    fn view(first: u64, instance: u64, texts: &[&str]) -> Fixed {
        let lines = texts.iter().map(|t| LogLine { time: Time::from_secs(1), text: t.to_string() }).collect();
        Fixed(LogView { lines, first, instance, running: true })
    }

    #[test]
    fn follow_skips_dropped_lines_and_ends_with_the_instance() {
        let req = LogRequest::parse("/containerLogs/default/p/app?follow=true").unwrap();
        let t = Time::from_secs(2);
        let c1 = render_from(&req, &view(10, 1, &["k", "l"]), t, None).unwrap();
        assert_eq!((c1.bytes.as_slice(), c1.cursor.line), (&b"k\nl\n"[..], 12));
        // Two more lines arrived and the oldest kept ones were dropped.
        let c2 = render_from(&req, &view(13, 1, &["n", "o"]), t, Some(c1.cursor)).unwrap();
        assert_eq!((c2.bytes.as_slice(), c2.done), (&b"n\no\n"[..], false));
        let c3 = render_from(&req, &view(13, 1, &["n", "o"]), t, Some(c2.cursor)).unwrap();
        assert_eq!((c3.bytes.as_slice(), c3.done), (&b""[..], false));
        // The container restarted: the stream of the old instance ends.
        let c4 = render_from(&req, &view(0, 2, &["new"]), t, Some(c3.cursor)).unwrap();
        assert_eq!((c4.bytes.as_slice(), c4.done), (&b""[..], true));
        // tailLines counts kept lines.
        let tail = LogRequest::parse("/containerLogs/default/p/app?tailLines=1").unwrap();
        assert_eq!(render_from(&tail, &view(10, 1, &["k", "l"]), t, None).unwrap().bytes, b"l\n");
    }

    #[test]
    fn follow_streams_new_lines_until_exit() {
        let (mut rt, t0) = setup("echo a; sleep 2; echo b; sleep 2; exit 0");
        let req = LogRequest::parse("/containerLogs/default/p/app?follow=true").unwrap();
        rt.advance_all(t0.plus_secs(1));
        let c1 = render_from(&req, &rt, t0, None).unwrap();
        assert_eq!((c1.bytes.as_slice(), c1.done), (&b"a\n"[..], false));
        rt.advance_all(t0.plus_secs(3));
        let c2 = render_from(&req, &rt, t0, Some(c1.cursor)).unwrap();
        assert_eq!((c2.bytes.as_slice(), c2.done), (&b"b\n"[..], false));
        rt.advance_all(t0.plus_secs(5));
        let c3 = render_from(&req, &rt, t0, Some(c2.cursor)).unwrap();
        assert_eq!((c3.bytes.as_slice(), c3.done), (&b""[..], true));
    }
}
