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
