//! What an HTTP answer says, in one line for the console: its status, and for a refusal
//! the message of the Kubernetes Status object in its body. Pure; everything shown is
//! printable and bounded, whatever the server sent.
#![forbid(unsafe_code)]

use alloc::format;
use alloc::string::String;

/// The status line of an HTTP answer, and the server's message for a refusal (a
/// Kubernetes Status object), shown printable and bounded.
pub fn describe(answer: &[u8]) -> String {
    let printable = |b: &[u8]| -> String {
        b.iter().take(200).map(|&c| if c.is_ascii_graphic() || c == b' ' { c as char } else { '?' }).collect()
    };
    let Some((head, body)) =
        answer.windows(4).position(|w| w == b"\r\n\r\n").map(|i| (&answer[..i], &answer[i + 4..]))
    else {
        return format!("malformed answer \"{}\"", printable(answer));
    };
    let status = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let status = printable(status.strip_suffix(b"\r").unwrap_or(status));
    let status = String::from(status.split_once(' ').map_or(status.as_str(), |(_, rest)| rest));
    with_message(status, body)
}

/// `status`, with the Status object's message from `body` unless the status is a success.
fn with_message(status: String, body: &[u8]) -> String {
    let printable = |b: &[u8]| -> String {
        b.iter().take(200).map(|&c| if c.is_ascii_graphic() || c == b' ' { c as char } else { '?' }).collect()
    };
    if status.starts_with('2') {
        return status;
    }
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(|m| printable(m.as_bytes())));
    match message {
        Some(m) => format!("{status}: {m}"),
        None => status,
    }
}

/// The same for a response already parsed: its status code and body.
pub fn describe_status(code: u16, body: &[u8]) -> String {
    let reason = match wire::http::reason(code) {
        "Unknown" => "",
        r => r,
    };
    with_message(String::from(format!("{code} {reason}").trim_end()), body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_messages() {
        assert_eq!(describe(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"), "200 OK");
        let refused = b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\n\r\n\
            {\"kind\":\"Status\",\"message\":\"nodes \\\"n2\\\" is forbidden\"}";
        assert_eq!(describe(refused), "403 Forbidden: nodes \"n2\" is forbidden");
        assert_eq!(describe(b"HTTP/1.1 404 Not Found\r\n\r\nnot json"), "404 Not Found");
        assert_eq!(describe(b"garbage\x01"), "malformed answer \"garbage?\"");
        let evil = b"HTTP/1.1 401 Unauthorized\r\n\r\n{\"message\":\"a\\u001b[2Jb\"}";
        assert_eq!(describe(evil), "401 Unauthorized: a?[2Jb");
        let long = [&b"HTTP/1.1 500 "[..], &[b'x'; 10_000][..], b"\r\n\r\n"].concat();
        assert!(describe(&long).len() <= 200);
        assert_eq!(describe(b""), "malformed answer \"\"");
        assert_eq!(
            describe_status(404, br#"{"message":"nodes \"n1\" not found"}"#),
            r#"404 Not Found: nodes "n1" not found"#
        );
        assert_eq!(describe_status(299, b""), "299");
    }
}
