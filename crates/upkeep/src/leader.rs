//! Leader election on a `coordination.k8s.io/v1` Lease, so that two replicas never both act.
//!
//! The decision ([`decide`]) is a pure function. Like client-go, a candidate judges expiry by how
//! long it has itself seen the lease unchanged, never by comparing its clock with `renewTime`, so
//! clock skew between nodes does not matter. Writes carry the `resourceVersion` read, so two
//! candidates that both see an expired lease cannot both take it: the second gets 409.
//!
//! A leader may act only until `renewed + 2/3 of the lease duration` ([`Leadership::is_leader`]),
//! checked before every step, so a leader that cannot renew stops acting at once, before anyone
//! else can take the lease. On shutdown the lease is released so that a standby takes over now.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot {what} the Lease {namespace}/{name}: {message} (upkeep needs get, create and update on leases in its namespace: deploy/manifests/upkeep.yaml)"
    )]
    Api {
        what: &'static str,
        namespace: String,
        name: String,
        message: String,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a candidate should do, given the lease as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds it, or the holder stopped renewing: take it.
    Acquire,
    /// We hold it: renew it.
    Renew,
    /// Someone else holds it.
    Follow { holder: String },
}

/// `holder` and `duration` as the lease says; `unchanged_for`: how long this candidate has seen
/// the lease without any change.
pub fn decide(
    me: &str,
    holder: Option<&str>,
    duration: Duration,
    unchanged_for: Duration,
) -> Decision {
    match holder.filter(|h| !h.is_empty()) {
        None => Decision::Acquire,
        Some(h) if h == me => Decision::Renew,
        Some(_) if unchanged_for >= duration => Decision::Acquire,
        Some(h) => Decision::Follow {
            holder: h.to_string(),
        },
    }
}

/// Settings of the election.
#[derive(Debug, Clone)]
pub struct Settings {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub duration: Duration,
}

impl Settings {
    /// This replica's identity: the pod's name (`POD_NAME`, from the downward API) or the host's,
    /// with the process id so that two processes on one host differ.
    pub fn default_identity() -> String {
        let host = std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .ok()
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|s| s.trim().to_string())
            })
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "upkeep".into());
        format!("{host}_{}", std::process::id())
    }
}

/// Whether this replica may act now, shared with the loop.
#[derive(Debug, Default)]
pub struct Leadership {
    until: Mutex<Option<Instant>>,
    known: AtomicBool,
    holder: Mutex<Option<String>>,
}

impl Leadership {
    /// A leadership that never expires, for a single replica run with election turned off.
    pub fn always() -> Leadership {
        let l = Leadership::default();
        *l.until.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600));
        l.known.store(true, Ordering::SeqCst);
        l
    }

    pub fn is_leader(&self) -> bool {
        self.until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|u| Instant::now() < u)
    }

    /// Whether the lease has been read at least once (for `/readyz`).
    pub fn known(&self) -> bool {
        self.known.load(Ordering::SeqCst)
    }

    /// Who holds the lease, as last seen.
    pub fn holder(&self) -> Option<String> {
        self.holder
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set(&self, until: Option<Instant>, holder: Option<String>) {
        *self.until.lock().unwrap_or_else(|e| e.into_inner()) = until;
        *self.holder.lock().unwrap_or_else(|e| e.into_inner()) = holder;
        self.known.store(true, Ordering::SeqCst);
    }
}

/// Takes part in the election until `stop`; calls `on_change(true)` on becoming leader and
/// `on_change(false)` on losing it. Releases the lease on the way out when held.
pub async fn run(
    client: kube::Client,
    s: Settings,
    me: std::sync::Arc<Leadership>,
    on_change: impl Fn(bool) + Send,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let api: Api<Lease> = Api::namespaced(client, &s.namespace);
    let err = |what: &'static str, e: kube::Error| Error::Api {
        what,
        namespace: s.namespace.clone(),
        name: s.name.clone(),
        message: crate::cluster::describe(&e),
    };
    // The lease as last seen and since when it has looked the same.
    let mut seen: Option<(String, Instant)> = None;
    let mut leading = false;
    let renew_every = (s.duration / 3).max(Duration::from_millis(200));
    loop {
        let started = Instant::now();
        let attempt = async {
            let current = match api.get_opt(&s.name).await {
                Ok(l) => l,
                Err(e) => return Err(err("read", e)),
            };
            let Some(mut lease) = current else {
                let fresh = Lease {
                    metadata: ObjectMeta {
                        name: Some(s.name.clone()),
                        namespace: Some(s.namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(spec_for(&s, None, 0)),
                };
                return match api.create(&PostParams::default(), &fresh).await {
                    Ok(_) => Ok(true),
                    // Another candidate created it first.
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                    Err(e) => Err(err("create", e)),
                };
            };
            let spec = lease.spec.clone().unwrap_or_default();
            let fingerprint = format!(
                "{:?}/{:?}/{:?}",
                spec.holder_identity, spec.renew_time, lease.metadata.resource_version
            );
            let since = match &seen {
                Some((f, t)) if *f == fingerprint => *t,
                _ => {
                    seen = Some((fingerprint.clone(), started));
                    started
                }
            };
            let duration = spec
                .lease_duration_seconds
                .map(|d| Duration::from_secs(d.max(1) as u64))
                .unwrap_or(s.duration);
            let decision = decide(
                &s.identity,
                spec.holder_identity.as_deref(),
                duration,
                started.duration_since(since),
            );
            let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
            match decision {
                Decision::Follow { holder } => {
                    me.set(None, Some(holder));
                    Ok(false)
                }
                Decision::Acquire | Decision::Renew => {
                    let transitions = spec.lease_transitions.unwrap_or(0)
                        + i32::from(decision == Decision::Acquire);
                    let acquired = if decision == Decision::Renew {
                        spec.acquire_time.clone()
                    } else {
                        None
                    };
                    lease.spec = Some(spec_for(&s, acquired, transitions));
                    match api.replace(&s.name, &PostParams::default(), &lease).await {
                        Ok(_) => Ok(true),
                        Err(kube::Error::Api(e)) if e.code == 409 => {
                            // Someone else wrote first; read again on the next round.
                            me.set(None, holder);
                            Ok(false)
                        }
                        Err(e) => Err(err("update", e)),
                    }
                }
            }
        };
        // An API server that hangs (or a client retrying a 503) must not keep the election from
        // noticing that the leadership ran out.
        let outcome: Result<bool> = tokio::time::timeout(renew_every, attempt)
            .await
            .unwrap_or_else(|_| {
                Err(Error::Api {
                    what: "renew",
                    namespace: s.namespace.clone(),
                    name: s.name.clone(),
                    message: format!("no answer within {renew_every:?}"),
                })
            });
        match outcome {
            Ok(true) => {
                // Renewals that came too late let the leadership lapse in between (the loop
                // then skipped its turn): said again, so that the loop catches up.
                let lapsed = leading && !me.is_leader();
                me.set(Some(started + s.duration * 2 / 3), Some(s.identity.clone()));
                if !leading {
                    tracing::info!(identity = %s.identity, lease = %s.name, "became the leader");
                    leading = true;
                    on_change(true);
                } else if lapsed {
                    tracing::info!(identity = %s.identity, lease = %s.name, "leading again after a late renewal");
                    on_change(true);
                }
            }
            Ok(false) => {
                if leading {
                    tracing::warn!(identity = %s.identity, "lost the lease: no new actions");
                    leading = false;
                    on_change(false);
                }
            }
            Err(e) => {
                // Keep acting only while the last renewal is fresh; `is_leader` times out by
                // itself.
                tracing::warn!(error = %e, "leader election");
                if leading && !me.is_leader() {
                    leading = false;
                    on_change(false);
                }
            }
        }
        let wait = if leading {
            renew_every
        } else {
            renew_every.min(Duration::from_secs(2))
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            break;
        }
    }
    if leading {
        me.set(None, None);
        on_change(false);
        release(&api, &s).await;
    }
}

fn spec_for(s: &Settings, acquired: Option<MicroTime>, transitions: i32) -> LeaseSpec {
    let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
    LeaseSpec {
        holder_identity: Some(s.identity.clone()),
        lease_duration_seconds: Some(s.duration.as_secs().clamp(1, i32::MAX as u64) as i32),
        acquire_time: Some(acquired.unwrap_or_else(|| now.clone())),
        renew_time: Some(now),
        lease_transitions: Some(transitions),
        ..Default::default()
    }
}

/// Gives the lease up (when still ours) so that a standby takes over at once.
async fn release(api: &Api<Lease>, s: &Settings) {
    let Ok(Some(mut lease)) = api.get_opt(&s.name).await else {
        return;
    };
    let mut spec = lease.spec.clone().unwrap_or_default();
    if spec.holder_identity.as_deref() != Some(s.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    lease.spec = Some(spec);
    match api.replace(&s.name, &PostParams::default(), &lease).await {
        Ok(_) => tracing::info!(lease = %s.name, "released the lease"),
        Err(e) => tracing::warn!(error = %e, "could not release the lease; it expires by itself"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_secs(15);

    #[test]
    fn a_free_lease_is_taken_and_ours_is_renewed() {
        assert_eq!(decide("a", None, D, Duration::ZERO), Decision::Acquire);
        assert_eq!(decide("a", Some(""), D, Duration::ZERO), Decision::Acquire);
        assert_eq!(decide("a", Some("a"), D, Duration::ZERO), Decision::Renew);
        assert_eq!(decide("a", Some("a"), D, D * 10), Decision::Renew);
    }

    #[test]
    fn anothers_lease_is_taken_only_once_it_stayed_unchanged_a_whole_duration() {
        assert_eq!(
            decide("a", Some("b"), D, D - Duration::from_millis(1)),
            Decision::Follow { holder: "b".into() }
        );
        assert_eq!(decide("a", Some("b"), D, D), Decision::Acquire);
    }

    #[test]
    fn leadership_expires_by_itself() {
        let l = Leadership::default();
        assert!(!l.is_leader() && !l.known());
        l.set(
            Some(Instant::now() + Duration::from_secs(60)),
            Some("me".into()),
        );
        assert!(l.is_leader() && l.known());
        l.set(
            Some(Instant::now() - Duration::from_millis(1)),
            Some("me".into()),
        );
        assert!(!l.is_leader());
        assert!(Leadership::always().is_leader());
    }
}
