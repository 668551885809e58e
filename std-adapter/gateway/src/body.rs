//! [`Body`]: the bytes of a large payload, sent from and received into memory the gateway
//! owns (a pool allocation, or a vector when no pool has room), so that the transport reads
//! and writes them in place instead of through a copy.

use core::fmt;

use dragon_channels::Message;

/// Who keeps a body's memory alive.
enum Owner {
    /// Read and written only through the body's pointer.
    Heap(#[allow(dead_code)] Vec<u8>),
    /// A message and where in it the body starts.
    Pool(Message, usize),
}

/// A range of memory owned by the gateway alone, at a fixed address for as long as the body
/// lives (a vector's heap buffer is never grown; a message's allocation stays mapped while
/// the message holds its pool), so that a transport may lend it to a non-blocking send or
/// receive and keep the body until that completes.
pub struct Body {
    ptr: *mut u8,
    len: usize,
    owner: Owner,
}

// SAFETY: `ptr` points into memory `owner` owns exclusively (a vector's buffer, or an
// allocation received or made by this process and held by nobody else); moving the body to
// another thread moves that ownership with it.
unsafe impl Send for Body {}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.owner {
            Owner::Heap(_) => "heap",
            Owner::Pool(..) => "pool",
        };
        write!(f, "Body({kind}, {} bytes)", self.len)
    }
}

impl Body {
    /// A body in a vector.
    pub fn heap(mut v: Vec<u8>) -> Self {
        Self {
            ptr: v.as_mut_ptr(),
            len: v.len(),
            owner: Owner::Heap(v),
        }
    }

    /// The bytes of `msg` from `start` on; `None` when the message has no memory or is
    /// shorter than `start`.
    pub fn pool(mut msg: Message, start: usize) -> Option<Self> {
        let b = msg.bytes_memview().ok()?;
        let tail = b.get_mut(start..)?;
        Some(Self {
            ptr: tail.as_mut_ptr(),
            len: tail.len(),
            owner: Owner::Pool(msg, start),
        })
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr..ptr + len` lies in memory `owner` keeps alive and owns exclusively
        // (see the type's doc); the borrow of `self` keeps it so.
        unsafe { core::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// The bytes, to fill.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and the unique borrow of `self` makes this the only view.
        unsafe { core::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    /// The message whose bytes these are, when they are all of it (a body received into a
    /// message of its own); else the body back.
    pub fn into_message(self) -> Result<Message, Self> {
        match self.owner {
            Owner::Pool(m, 0) => Ok(m),
            owner => Err(Self { owner, ..self }),
        }
    }
}
