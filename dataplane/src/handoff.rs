//! Flow affinity in software: every frame that reaches user space is
//! inspected by the worker that owns its flow, whatever queue it arrived on.
//!
//! The XDP program can only redirect a frame to the AF_XDP socket of the
//! queue it arrived on, and which queue that is depends on the NIC's RSS
//! (symmetric only if configured, never across two different NICs) or, on
//! veth, on the sender's TX queue. A flow's state (established, request and
//! response, the verdict) must live in one worker, so a worker that receives
//! a frame of a flow another worker owns (by a hash of the
//! direction-independent key) hands it over: the frame descriptor goes into
//! the owner's inbox (all queues share one UMEM, so nothing is copied), the
//! owner inspects and forwards or releases it, and a released frame goes
//! back to the worker whose range of the UMEM it belongs to. With symmetric
//! RSS nothing is handed over and the cost is one hash per frame, the way
//! DPDK applications re-steer when the hardware does not.
//!
//! Each worker has an inbox of frames to inspect and a return queue of its
//! own frames to take back (lock-free bounded queues), and an eventfd that
//! wakes it from poll() when it sleeps.

use std::{
    hash::{Hash as _, Hasher as _},
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use crossbeam_queue::ArrayQueue;
use xsk_rs::FrameDesc;

/// A frame handed to its flow's worker, with the port it came in on.
#[derive(Clone, Copy, Debug)]
pub struct Parcel {
    pub desc: FrameDesc,
    pub port: u8,
}

/// One worker's side of the hand-off.
struct Slot {
    inbox: ArrayQueue<Parcel>,
    returns: ArrayQueue<FrameDesc>,
    wake: OwnedFd,
    sleeping: AtomicBool,
}

/// The hand-off between the workers of one data plane.
pub struct Handoffs {
    slots: Vec<Slot>,
}

/// The worker that owns `key` among `workers` (a hash of the
/// direction-independent key, so both directions agree).
pub fn owner(key: &dpi::FlowKey, workers: usize) -> usize {
    let mut hasher = std::hash::DefaultHasher::new();
    key.hash(&mut hasher);
    // the high bits of a 64-bit hash, scaled: no modulo bias worth naming
    ((u128::from(hasher.finish()) * workers as u128) >> 64) as usize
}

impl Handoffs {
    /// Inboxes of `inbox` parcels and return queues of `frames` frames
    /// (every frame a worker owns can be away at once) for `workers` workers.
    pub fn new(workers: usize, inbox: usize, frames: usize) -> io::Result<Arc<Handoffs>> {
        let slots = (0..workers)
            .map(|_| {
                // SAFETY: eventfd with no pointers; the fd is checked and owned.
                let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(Slot {
                    inbox: ArrayQueue::new(inbox.max(1)),
                    returns: ArrayQueue::new(frames.max(1)),
                    // SAFETY: a fresh fd nobody else owns.
                    wake: unsafe { OwnedFd::from_raw_fd(fd) },
                    sleeping: AtomicBool::new(false),
                })
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Arc::new(Handoffs { slots }))
    }

    pub fn workers(&self) -> usize {
        self.slots.len()
    }

    /// Hands a frame to worker `to`; gives it back when the inbox is full.
    pub fn send(&self, to: usize, parcel: Parcel) -> Result<(), Parcel> {
        self.slots[to].inbox.push(parcel)?;
        self.wake(to);
        Ok(())
    }

    /// Gives a frame back to the worker `to` whose range it belongs to.
    /// Cannot fail: the queue holds every frame that worker owns.
    pub fn give_back(&self, to: usize, desc: FrameDesc) {
        if self.slots[to].returns.push(desc).is_err() {
            // Only a bookkeeping bug can get here (a frame returned twice).
            tracing::error!(to, "hand-off: a return queue overflowed; a frame is lost");
        }
        self.wake(to);
    }

    /// The next frame handed to worker `me`.
    pub fn receive(&self, me: usize) -> Option<Parcel> {
        self.slots[me].inbox.pop()
    }

    /// The next of worker `me`'s frames given back.
    pub fn returned(&self, me: usize) -> Option<FrameDesc> {
        self.slots[me].returns.pop()
    }

    /// The fd that becomes readable when worker `me` has parcels or returns.
    pub fn wake_fd(&self, me: usize) -> RawFd {
        self.slots[me].wake.as_raw_fd()
    }

    /// Worker `me` is about to sleep in poll(): from now on senders wake it.
    /// Returns false (do not sleep) if something is already waiting.
    pub fn may_sleep(&self, me: usize) -> bool {
        let slot = &self.slots[me];
        slot.sleeping.store(true, Ordering::SeqCst);
        // Checked after the flag is up: a sender that pushed before seeing
        // it is seen here, one that pushes after it wakes us.
        slot.inbox.is_empty() && slot.returns.is_empty()
    }

    /// Worker `me` is awake again.
    pub fn awake(&self, me: usize) {
        let slot = &self.slots[me];
        slot.sleeping.store(false, Ordering::SeqCst);
        let mut count = 0u64;
        // SAFETY: reads 8 bytes into `count` from our own non-blocking
        // eventfd (EAGAIN when nothing is pending is fine).
        unsafe { libc::read(slot.wake.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
    }

    fn wake(&self, to: usize) {
        let slot = &self.slots[to];
        if slot.sleeping.load(Ordering::SeqCst) {
            let one = 1u64;
            // SAFETY: writes 8 bytes from `one` to our own eventfd.
            unsafe { libc::write(slot.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(sport: u16) -> dpi::FlowKey {
        dpi::FlowKey::new(
            format!("198.18.0.1:{sport}").parse().unwrap(),
            "198.18.0.2:80".parse().unwrap(),
            6,
            0,
        )
        .0
    }

    #[test]
    fn both_directions_have_one_owner_and_flows_spread() {
        let mut per_worker = [0u32; 4];
        for sport in 1000..5000 {
            let k = key(sport);
            let (back, _) = dpi::FlowKey::new(k.b(), k.a(), 6, 0);
            assert_eq!(owner(&k, 4), owner(&back, 4));
            per_worker[owner(&k, 4)] += 1;
        }
        for n in per_worker {
            assert!(
                (850..1150).contains(&n),
                "4000 flows over 4 workers: {per_worker:?}"
            );
        }
        assert_eq!(owner(&key(1), 1), 0);
    }

    #[test]
    fn parcels_and_returns_reach_their_worker_and_wake_it() {
        let h = Handoffs::new(2, 2, 4).unwrap();
        let parcel = Parcel {
            desc: FrameDesc::default(),
            port: 1,
        };
        assert!(h.may_sleep(1), "nothing waiting");
        h.send(1, parcel).unwrap();
        h.send(1, parcel).unwrap();
        assert!(h.send(1, parcel).is_err(), "a full inbox refuses");
        let mut fds = [libc::pollfd {
            fd: h.wake_fd(1),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: a valid pollfd array of one.
        assert_eq!(unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) }, 1, "woken");
        h.awake(1);
        assert!(!h.may_sleep(1), "parcels are waiting");
        assert_eq!(h.receive(1).map(|p| p.port), Some(1));
        assert!(h.receive(0).is_none());
        h.give_back(0, FrameDesc::default());
        assert!(h.returned(0).is_some() && h.returned(0).is_none());
    }
}
