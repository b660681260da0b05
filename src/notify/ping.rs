//! healthchecks.io-style pings with blocking `ureq` on tokio's blocking pool: a short timeout,
//! a few attempts, and a warning (never an error) when the monitor cannot be reached.

use std::time::Duration;

/// The most of a failure message sent as a ping body.
pub const MAX_BODY: usize = 10 * 1024;
const ATTEMPTS: u32 = 3;
const TIMEOUT: Duration = Duration::from_secs(10);

/// The last lines of `message` that fit in [`MAX_BODY`] bytes.
pub fn tail(message: &str) -> String {
    if message.len() <= MAX_BODY {
        return message.to_string();
    }
    let mut start = message.len() - MAX_BODY;
    while !message.is_char_boundary(start) {
        start += 1;
    }
    let cut = &message[start..];
    match cut.find('\n') {
        Some(i) if i + 1 < cut.len() => cut[i + 1..].to_string(),
        _ => cut.to_string(),
    }
}

/// POSTs `body` to `url` (a GET-equivalent ping when empty); logs a warning if every attempt fails.
pub async fn send(url: String, body: String) {
    let shown = shown(&url);
    let result = tokio::task::spawn_blocking(move || post(&url, &body)).await;
    match result {
        Ok(Ok(())) => tracing::debug!("pinged {shown}"),
        Ok(Err(e)) => tracing::warn!("notify_url: cannot ping {shown}: {e}"),
        Err(e) => tracing::warn!("notify_url: ping {shown} did not run: {e}"),
    }
}

/// The URL as logged: scheme and host only (the path of a ping URL is its secret).
fn shown(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host = rest.split('/').next().unwrap_or("");
    format!("{scheme}://{host}/…")
}

fn post(url: &str, body: &str) -> Result<(), String> {
    let agent = ureq::AgentBuilder::new().timeout(TIMEOUT).build();
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            std::thread::sleep(Duration::from_secs(1 << attempt));
        }
        match agent.post(url).send_string(body) {
            Ok(_) => return Ok(()),
            // A 4xx answer will not change on a retry.
            Err(ureq::Error::Status(s, _)) if (400..500).contains(&s) => {
                return Err(format!("HTTP {s}"))
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(format!("{last} (after {ATTEMPTS} attempts)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_whole_last_lines_within_the_limit() {
        assert_eq!(tail("short"), "short");
        let long = format!("{}\nlast line\n", "x".repeat(20_000));
        assert_eq!(tail(&long), "last line\n");
        let many: String = (0..3000).map(|i| format!("line {i}\n")).collect();
        let t = tail(&many);
        assert!(t.len() <= MAX_BODY && t.starts_with("line ") && t.ends_with("line 2999\n"));
    }
}
