//! GitHub webhooks: what `POST /webhook` accepts. A delivery is trusted only when its
//! `X-Hub-Signature-256` is the HMAC-SHA256 of the raw body under the shared secret, compared in
//! constant time. A trusted push to the base branch or a pull request event wakes the loop at
//! once; everything else is acknowledged and ignored. Pure functions; the HTTP handler is in
//! [`crate::server`].

use serde::Deserialize;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error(
        "the delivery has no X-Hub-Signature-256 header: set the webhook's secret on GitHub (Settings > Webhooks) to the one upkeep has"
    )]
    MissingSignature,
    #[error(
        "X-Hub-Signature-256 is not `sha256=` followed by 64 hex digits: is this a GitHub delivery?"
    )]
    MalformedSignature,
    #[error(
        "X-Hub-Signature-256 does not match the body: the webhook's secret on GitHub differs from upkeep's (UPKEEP_WEBHOOK_SECRET)"
    )]
    BadSignature,
    #[error("the {event} event's body is not the JSON GitHub sends: {detail}")]
    Payload { event: String, detail: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Checks `header` (the value of `X-Hub-Signature-256`) against `body` under `secret`, in
/// constant time.
pub fn verify(secret: &[u8], body: &[u8], header: Option<&str>) -> Result<()> {
    let header = header.ok_or(Error::MissingSignature)?;
    let hex = header
        .strip_prefix("sha256=")
        .ok_or(Error::MalformedSignature)?;
    let tag = decode_hex(hex).ok_or(Error::MalformedSignature)?;
    if tag.len() != 32 {
        return Err(Error::MalformedSignature);
    }
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    ring::hmac::verify(&key, body, &tag).map_err(|_| Error::BadSignature)
}

/// The signature header value GitHub would send for `body` (for tests and `upkeep` tooling).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, body);
    let mut s = String::from("sha256=");
    for b in tag.as_ref() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    s.as_bytes()
        .chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

/// What a trusted delivery asks of the loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// Reconcile now: the base branch moved (a merge, or a human's commit).
    Apply,
    /// Reconcile now and look at pull requests again (one was opened, closed or merged).
    Propose,
    /// Nothing to do (a ping, another branch, an event upkeep does not use).
    Ignore(String),
}

#[derive(Deserialize)]
struct Push {
    #[serde(rename = "ref")]
    git_ref: String,
}

#[derive(Deserialize)]
struct PullRequestEvent {
    action: String,
    pull_request: PullRequest,
}

#[derive(Deserialize)]
struct PullRequest {
    base: Base,
}

#[derive(Deserialize)]
struct Base {
    #[serde(rename = "ref")]
    git_ref: String,
}

/// Classifies a trusted delivery: `event` is the `X-GitHub-Event` header.
pub fn classify(event: &str, body: &[u8], base: &str) -> Result<Trigger> {
    let bad = |e: serde_json::Error| Error::Payload {
        event: event.to_string(),
        detail: e.to_string(),
    };
    match event {
        "push" => {
            let p: Push = serde_json::from_slice(body).map_err(bad)?;
            if p.git_ref == format!("refs/heads/{base}") {
                Ok(Trigger::Apply)
            } else {
                Ok(Trigger::Ignore(format!("a push to {}", p.git_ref)))
            }
        }
        "pull_request" => {
            let p: PullRequestEvent = serde_json::from_slice(body).map_err(bad)?;
            if p.pull_request.base.git_ref != base {
                Ok(Trigger::Ignore(format!(
                    "a pull request into {}",
                    p.pull_request.base.git_ref
                )))
            } else if matches!(p.action.as_str(), "closed" | "reopened" | "opened") {
                Ok(Trigger::Propose)
            } else {
                Ok(Trigger::Ignore(format!("pull request {}", p.action)))
            }
        }
        "ping" => Ok(Trigger::Ignore("ping".into())),
        other => Ok(Trigger::Ignore(format!("the {other} event"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // GitHub's documented example (docs.github.com, "Validating webhook deliveries").
    const DOC_SECRET: &str = "It's a Secret to Everybody";
    const DOC_BODY: &str = "Hello, World!";
    const DOC_SIG: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn githubs_documented_example_verifies() {
        assert_eq!(sign(DOC_SECRET.as_bytes(), DOC_BODY.as_bytes()), DOC_SIG);
        assert_eq!(
            verify(DOC_SECRET.as_bytes(), DOC_BODY.as_bytes(), Some(DOC_SIG)),
            Ok(())
        );
        let upper = format!("sha256={}", DOC_SIG[7..].to_uppercase());
        assert_eq!(
            verify(DOC_SECRET.as_bytes(), DOC_BODY.as_bytes(), Some(&upper)),
            Ok(())
        );
    }

    #[test]
    fn wrong_missing_or_malformed_signatures_are_refused() {
        let s = DOC_SECRET.as_bytes();
        assert_eq!(
            verify(s, b"Hello, World?", Some(DOC_SIG)),
            Err(Error::BadSignature)
        );
        assert_eq!(
            verify(b"other", DOC_BODY.as_bytes(), Some(DOC_SIG)),
            Err(Error::BadSignature)
        );
        assert_eq!(
            verify(s, DOC_BODY.as_bytes(), None),
            Err(Error::MissingSignature)
        );
        for h in [
            "",
            "sha1=757107ea",
            "sha256=",
            "sha256=zz",
            "sha256=757",
            "sha256=7571",
            format!("{DOC_SIG}00").as_str(),
            "sha256=ü7",
        ] {
            assert_eq!(
                verify(s, DOC_BODY.as_bytes(), Some(h)),
                Err(Error::MalformedSignature),
                "{h}"
            );
        }
    }

    #[test]
    fn events_are_classified_by_branch_and_action() {
        let push = |r: &str| format!(r#"{{"ref":"{r}","after":"abc"}}"#);
        assert_eq!(
            classify("push", push("refs/heads/main").as_bytes(), "main"),
            Ok(Trigger::Apply)
        );
        assert!(matches!(
            classify("push", push("refs/heads/upkeep/k3s").as_bytes(), "main"),
            Ok(Trigger::Ignore(_))
        ));
        let pr = |action: &str, base: &str| {
            format!(
                r#"{{"action":"{action}","number":1,"pull_request":{{"merged":true,"base":{{"ref":"{base}"}}}}}}"#
            )
        };
        assert_eq!(
            classify("pull_request", pr("closed", "main").as_bytes(), "main"),
            Ok(Trigger::Propose)
        );
        assert!(matches!(
            classify("pull_request", pr("labeled", "main").as_bytes(), "main"),
            Ok(Trigger::Ignore(_))
        ));
        assert!(matches!(
            classify("pull_request", pr("closed", "dev").as_bytes(), "main"),
            Ok(Trigger::Ignore(_))
        ));
        assert!(matches!(
            classify("ping", b"{}", "main"),
            Ok(Trigger::Ignore(_))
        ));
        assert!(matches!(
            classify("issues", b"{}", "main"),
            Ok(Trigger::Ignore(_))
        ));
        assert!(matches!(
            classify("push", b"not json", "main"),
            Err(Error::Payload { .. })
        ));
    }
}
