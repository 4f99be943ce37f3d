//! The tag stamps this process knows, so an L2 read is one `GET` and a
//! comparison in memory instead of a script that reads the stamps in Redis.
//!
//! The mirror is kept current by the invalidation bus: every invalidation
//! message carries the stamp it gave its tags, and the process that stamps
//! applies its own stamp as soon as Redis answers. After each (re)subscription
//! the bus reloads every live stamp from Redis (the stamp index, see
//! [`super::redis`]) before the mirror is trusted again; while the bus is
//! down or the reload has not finished, reads fall back to asking Redis.
//!
//! An entry is fresh when every tag stamp recorded in its header equals the
//! tag's stamp here. A tag missing here was never stamped, or its stamp
//! expired (Redis forgets it too, after it outlived every entry that could
//! record it), so it counts as `0`. Memory is bounded: beyond [`CAPACITY`]
//! tags the oldest are dropped early, and until they would have expired a
//! missing tag is *unknown* (the read asks Redis) instead of `0`.
//!
//! Coherence is that of the bus, the same as L1's: once an invalidation
//! message has reached this process, neither tier serves what it
//! invalidated.

use std::collections::{HashMap, VecDeque};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use super::CacheTag;

/// Most tags remembered; at about 100 bytes each, a few tens of MB.
pub(crate) const CAPACITY: usize = 200_000;

/// What the mirror says about an entry's recorded stamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Fresh,
    Stale,
    /// Not ready, or a tag's stamp may have been dropped early: ask Redis.
    Unknown,
}

pub(crate) struct Stamps {
    state: RwLock<State>,
    tag_ttl: Duration,
    capacity: usize,
}

#[derive(Default)]
struct State {
    /// True once a reload finished since the bus last (re)subscribed.
    ready: bool,
    /// Bumped at every bus (re)subscription and loss: a reload started
    /// under an older generation does not make the mirror ready.
    generation: u64,
    tags: HashMap<Box<str>, Stamp>,
    /// Stamps in arrival order, for expiry; may hold superseded stamps of
    /// a tag (skipped when popped), compacted when it grows past twice
    /// the capacity.
    order: VecDeque<(Instant, Box<str>, u64)>,
    /// Highest stamp applied: the counter value a filler compares against.
    max_seq: u64,
    /// Until then a missing tag may have been dropped early.
    dropped_until: Option<Instant>,
}

impl State {
    /// A tag's current stamp (`0`: never stamped, or expired); `None` when
    /// it may have been dropped early.
    fn stamp_of(&self, tag: &str, now: Instant) -> Option<u64> {
        match self.tags.get(tag) {
            Some(s) if s.expires > now => Some(s.seq),
            _ if self.dropped_until.is_some_and(|t| t > now) => None,
            _ => Some(0),
        }
    }
}

#[derive(Clone, Copy)]
struct Stamp {
    seq: u64,
    expires: Instant,
}

impl Stamps {
    pub fn new(tag_ttl: Duration) -> Self {
        Self::with_capacity(tag_ttl, CAPACITY)
    }

    fn with_capacity(tag_ttl: Duration, capacity: usize) -> Self {
        Self {
            state: RwLock::default(),
            tag_ttl,
            capacity,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // The state stays consistent across a panic (each update is a few
        // assignments); keep serving.
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Judges an entry by the `(tag, stamp)` pairs of its header.
    pub fn check<'a>(&self, recorded: impl IntoIterator<Item = (&'a str, u64)>) -> Verdict {
        let state = self.read();
        if !state.ready {
            return Verdict::Unknown;
        }
        let now = Instant::now();
        let mut verdict = Verdict::Fresh;
        for (tag, seq) in recorded {
            match state.stamp_of(tag, now) {
                Some(current) if current != seq => return Verdict::Stale,
                Some(_) => {}
                None => verdict = Verdict::Unknown,
            }
        }
        verdict
    }

    /// The stamps a fill records for `tags`, and the current counter value;
    /// `None` when the mirror cannot say (ask Redis).
    pub fn current(&self, tags: &[CacheTag]) -> Option<Vec<u64>> {
        let state = self.read();
        if !state.ready {
            return None;
        }
        let now = Instant::now();
        tags.iter()
            .map(|t| state.stamp_of(t.as_str(), now))
            .collect()
    }

    /// The counter value a filler remembers before it loads; `None` when
    /// the mirror is not ready.
    pub fn seq(&self) -> Option<u64> {
        let state = self.read();
        state.ready.then_some(state.max_seq)
    }

    /// Records that `tags` were stamped `seq` just now.
    pub fn apply<'a>(&self, tags: impl IntoIterator<Item = &'a str>, seq: u64) {
        let expires = Instant::now() + self.tag_ttl;
        let mut state = self.write();
        for tag in tags {
            self.insert(&mut state, tag, seq, expires);
        }
        state.max_seq = state.max_seq.max(seq);
        self.prune(&mut state);
    }

    /// The bus (re)subscribed: the mirror may have missed stamps until a
    /// reload started from now on finishes. Returns the reload's generation.
    pub fn resubscribed(&self) -> u64 {
        let mut state = self.write();
        state.ready = false;
        state.generation += 1;
        state.generation
    }

    /// Whether no (re)subscription or loss happened since `generation`.
    pub fn is_current(&self, generation: u64) -> bool {
        self.read().generation == generation
    }

    /// The bus lost its subscription: stamps may be missed from now on.
    pub fn lost(&self) {
        let mut state = self.write();
        state.ready = false;
        state.generation += 1;
    }

    /// A reload of generation `generation` read these live stamps (each
    /// with the time it has left) and the counter: merged, and the mirror
    /// is ready unless the bus resubscribed or was lost meanwhile. A
    /// counter below what the mirror has seen means Redis lost its data
    /// (a restart without persistence): the mirror is emptied instead and
    /// `false` returned, so the caller reloads into the empty mirror.
    pub fn reloaded(&self, generation: u64, seq: u64, live: Vec<(String, u64, Duration)>) -> bool {
        let now = Instant::now();
        let mut state = self.write();
        if seq < state.max_seq {
            state.tags.clear();
            state.order.clear();
            state.max_seq = 0;
            state.dropped_until = None;
            return false;
        }
        for (tag, stamp, left) in live {
            self.insert(&mut state, &tag, stamp, now + left);
        }
        state.max_seq = state.max_seq.max(seq);
        self.prune(&mut state);
        if state.generation == generation {
            state.ready = true;
        }
        true
    }

    /// Keeps the newer of two stamps of a tag (stamps only grow).
    fn insert(&self, state: &mut State, tag: &str, seq: u64, expires: Instant) {
        match state.tags.get_mut(tag) {
            Some(s) if s.seq >= seq => return,
            Some(s) => *s = Stamp { seq, expires },
            None => {
                state.tags.insert(tag.into(), Stamp { seq, expires });
            }
        }
        state.order.push_back((expires, tag.into(), seq));
    }

    /// Forgets expired stamps, then the oldest beyond the capacity.
    fn prune(&self, state: &mut State) {
        let now = Instant::now();
        while let Some((expires, _, _)) = state.order.front() {
            let over = state.tags.len() > self.capacity;
            if *expires > now && !over {
                break;
            }
            let Some((expires, tag, seq)) = state.order.pop_front() else {
                break;
            };
            // Only the tag's newest stamp removes it.
            if state.tags.get(&tag).is_some_and(|s| s.seq == seq) {
                state.tags.remove(&tag);
                if expires > now {
                    let until = state.dropped_until.map_or(expires, |t| t.max(expires));
                    state.dropped_until = Some(until);
                }
            }
        }
        if state.order.len() > 2 * self.capacity.max(1) {
            let mut live: Vec<_> = state
                .tags
                .iter()
                .map(|(t, s)| (s.expires, t.clone(), s.seq))
                .collect();
            live.sort_by_key(|(e, _, _)| *e);
            state.order = live.into();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.read().tags.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    fn ready(stamps: &Stamps) {
        let g = stamps.resubscribed();
        assert!(stamps.reloaded(g, 0, Vec::new()));
    }

    #[test]
    fn nothing_is_trusted_before_the_first_reload() {
        let s = Stamps::new(TTL);
        assert_eq!(s.check([("a", 0)]), Verdict::Unknown);
        assert_eq!(s.seq(), None);
        ready(&s);
        assert_eq!(s.check([("a", 0)]), Verdict::Fresh);
        assert_eq!(s.seq(), Some(0));
    }

    #[test]
    fn a_newer_stamp_makes_entries_recording_the_old_one_stale() {
        let s = Stamps::new(TTL);
        ready(&s);
        s.apply(["a"], 5);
        assert_eq!(s.check([("a", 0), ("b", 0)]), Verdict::Stale);
        assert_eq!(s.check([("a", 5), ("b", 0)]), Verdict::Fresh);
        assert_eq!(s.check([("b", 3)]), Verdict::Stale);
        // An older stamp arriving late changes nothing.
        s.apply(["a"], 4);
        assert_eq!(s.check([("a", 5)]), Verdict::Fresh);
        assert_eq!(s.seq(), Some(5));
    }

    #[test]
    fn a_reload_started_before_a_loss_does_not_make_the_mirror_ready() {
        let s = Stamps::new(TTL);
        let g = s.resubscribed();
        s.lost();
        s.reloaded(g, 9, vec![("a".into(), 9, TTL)]);
        assert_eq!(s.check([("a", 9)]), Verdict::Unknown);
        let g = s.resubscribed();
        assert!(s.reloaded(g, 9, Vec::new()));
        // The stamp read by the earlier reload is kept: stamps only grow.
        assert_eq!(s.check([("a", 9)]), Verdict::Fresh);
        assert_eq!(s.current(&[CacheTag::new("a").unwrap()]), Some(vec![9]));
    }

    #[test]
    fn beyond_capacity_missing_tags_are_unknown_until_the_dropped_would_expire() {
        let s = Stamps::with_capacity(TTL, 3);
        ready(&s);
        for (i, t) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            s.apply([*t], i as u64 + 1);
        }
        assert_eq!(s.len(), 3);
        // "a" was dropped early: an entry recording it cannot be judged.
        assert_eq!(s.check([("a", 1)]), Verdict::Unknown);
        assert_eq!(s.check([("e", 5), ("zz", 0)]), Verdict::Unknown);
        // A mismatch among the known tags is still stale.
        assert_eq!(s.check([("e", 4), ("zz", 0)]), Verdict::Stale);
        assert_eq!(s.check([("e", 5)]), Verdict::Fresh);
        assert_eq!(s.current(&[CacheTag::new("zz").unwrap()]), None);
    }

    #[test]
    fn superseded_stamps_are_compacted_so_memory_stays_bounded() {
        let s = Stamps::with_capacity(TTL, 4);
        ready(&s);
        for seq in 1..=100 {
            s.apply(["hot"], seq);
        }
        let state = s.read();
        assert_eq!(state.tags.len(), 1);
        assert!(state.order.len() <= 8, "{}", state.order.len());
        assert!(state.dropped_until.is_none());
    }

    #[test]
    fn a_counter_that_went_back_empties_the_mirror_before_it_is_trusted() {
        let s = Stamps::new(TTL);
        ready(&s);
        s.apply(["a"], 50);
        let g = s.resubscribed();
        assert!(!s.reloaded(g, 3, vec![("a".into(), 3, TTL)]));
        assert_eq!(s.seq(), None);
        assert!(s.reloaded(g, 3, vec![("a".into(), 3, TTL)]));
        assert_eq!(s.check([("a", 3)]), Verdict::Fresh);
        assert_eq!(s.seq(), Some(3));
    }

    #[test]
    fn expired_stamps_count_as_never_stamped() {
        let s = Stamps::new(Duration::ZERO);
        ready(&s);
        s.apply(["a"], 7);
        assert_eq!(s.check([("a", 0)]), Verdict::Fresh);
        assert_eq!(s.check([("a", 7)]), Verdict::Stale);
    }
}
