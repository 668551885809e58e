//! The seed's example (the Python code at the end of the `dragon.channels` page) in Rust:
//! create a pool and a channel, send a message, receive it, print `Hello -- Hello`.
//!
//! Run with `cargo run --release --example quickstart`.

use dragon_channels::{Channel, MemoryPool, Message, Timeout};

fn main() -> Result<(), Box<dyn core::error::Error>> {
    // Create a pool. The seed asks for 32 KiB, but a channel with Dragon's default attributes
    // (100 slots of 1024 bytes) needs a 128 KiB block of it, so this pool is 1 MiB. The pid
    // keeps the name unique when several copies run at once.
    let name = format!("example_pool-{}", std::process::id());
    let mpool = MemoryPool::create(1 << 20, &name, 0)?;
    // Create a channel.
    let ch = Channel::create(&mpool, 1, None)?;

    // Open a send handle.
    let mut sendh = ch.sendh()?;
    sendh.open()?;

    // Open a receive handle.
    let mut recvh = ch.recvh()?;
    recvh.open()?;

    // Explicitly allocate a message and populate its payload.
    let mut msg = Message::create_alloc(&mpool, 512)?;
    msg.bytes_memview()?[0..5].copy_from_slice(b"Hello");

    // Send the message (by copy: we keep `msg`).
    sendh.send(&msg, None, Timeout::Default)?;

    // Receive a message.
    let recv_msg = recvh.recv(Timeout::Default)?;

    // Prints "Hello -- Hello".
    println!(
        "{} -- {}",
        String::from_utf8_lossy(&msg.bytes()?[0..5]),
        String::from_utf8_lossy(&recv_msg.bytes()?[0..5])
    );

    // Clean up: free the messages, destroy the channel and the pool (unlinks the file).
    drop((msg, recv_msg, sendh, recvh));
    ch.destroy()?;
    mpool.destroy()?;
    Ok(())
}
