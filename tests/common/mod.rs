#![allow(dead_code)]

pub mod openapi;
pub mod rbac;

/// An HTTP client for what a test does by hand (merging, reading the emulators). It sends a
/// User-Agent, as GitHub requires of every client.
pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .user_agent("upkeep-test")
        .build()
        .expect("client")
}

/// xorshift64*: a small, fast generator that gives the same history for a seed everywhere (the
/// property tests).
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// A human merges pull request `number` of `repo` on the GitHub emulator at `api` (squash).
pub fn merge(api: &str, repo: &str, token: &str, number: u64) -> reqwest::blocking::Response {
    http()
        .put(format!("{api}/repos/{repo}/pulls/{number}/merge"))
        .header("authorization", format!("Bearer {token}"))
        .body(r#"{"merge_method":"squash"}"#)
        .send()
        .expect("merge")
}

/// The seeds of a property test, split in two halves that the harness runs side by side: the
/// count from the environment variable `count_var` (default `default`), the first seed from
/// `UPKEEP_PROPERTY_SEED` (default 1). `half` is 0 or 1; each gets (first seed, count).
pub fn half(count_var: &str, default: u64, half: u64) -> (u64, u64) {
    let count: u64 = std::env::var(count_var)
        .ok()
        .and_then(|v| v.replace(['_', ','], "").parse().ok())
        .unwrap_or(default);
    let first: u64 = std::env::var("UPKEEP_PROPERTY_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    match half {
        0 => (first, count.div_ceil(2)),
        _ => (first + count.div_ceil(2), count / 2),
    }
}

/// A policy that turns the soak off: the scenarios that are not about soaking see a validated
/// rollout succeed at once (the default soak is a day). Committed as `policies/zz-tests.yaml`,
/// the last file read, so that it overrides the example's soak.
pub const NO_SOAK: &str = "apiVersion: upkeep.dev/v1alpha1\nkind: Policy\nsoak:\n  - name: none-in-tests\n    duration: \"0\"\n";

/// The file [`NO_SOAK`] goes in.
pub const NO_SOAK_FILE: &str = "policies/zz-tests.yaml";

/// The example config repository as `repo` on the GitHub emulator, with the soak off
/// ([`NO_SOAK`]); its bare repository's path.
pub fn seed_example_repo(gh: &upkeep_sim::upstream::UpstreamSim, repo: &str) -> std::path::PathBuf {
    let seed = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/cluster-repo");
    let path = gh
        .with_forge(|f| f.create_repo(repo, Some(&seed), chrono::Utc::now()))
        .expect("forge")
        .expect("repo");
    gh.with_forge(|f| f.commit_file(repo, "main", NO_SOAK_FILE, NO_SOAK, "Tests: no soak"))
        .expect("forge")
        .expect("commit");
    path
}
