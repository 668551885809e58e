//! `dragon-gateway`: one node's gateway, and optionally the node's client command.
//!
//! ```text
//! dragon-gateway [--transport mpi|tcp] [--rank R --peers ADDR,ADDR,...] [--pool NAME]
//!                [--pool-size BYTES] [--env-file PATH] [--stats] [-- COMMAND ARGS...]
//! ```
//! With MPI (`--transport mpi`, the default when built with the `mpi` feature) rank and size
//! come from the launcher: `mpirun -n <nodes> --map-by ppr:1:node --bind-to none
//! dragon-gateway -- ./client` or `srun --ntasks-per-node=1 dragon-gateway -- ./client`.
//! With TCP every gateway is given its rank and the address list.
//!
//! The gateway creates its pool and channel, greets the other gateways, then starts
//! `COMMAND` with `DRAGON_GW1` and `DRAGON_GW_PID` set (and `DRAGON_GW_RANK`,
//! `DRAGON_GW_SIZE`), serves until that command has exited on every node, and exits with
//! the command's status. Without a command it serves until it is killed, and writes the
//! client environment (`KEY=VALUE` lines) to `--env-file`.

use core::time::Duration;
use std::process::{Child, Command, ExitCode};
use std::time::Instant;

use dragon_channels_gateway::{Config, Gateway, Transport};

/// How often the gateway asks whether its client ended.
const CHILD_CHECK: Duration = Duration::from_millis(1);

/// What the command line says.
struct Args {
    transport: String,
    rank: Option<usize>,
    peers: Vec<core::net::SocketAddr>,
    cfg: Config,
    env_file: Option<String>,
    stats: bool,
    command: Vec<String>,
}

fn usage(why: &str) -> ! {
    eprintln!(
        "dragon-gateway: {why}\nusage: dragon-gateway [--transport mpi|tcp] [--rank R --peers ADDR,...] \
         [--pool NAME] [--pool-size BYTES] [--env-file PATH] [--stats] [-- COMMAND ARGS...]"
    );
    std::process::exit(2)
}

fn parse() -> Args {
    let mut a = Args {
        transport: if cfg!(feature = "mpi") { "mpi" } else { "tcp" }.to_owned(),
        rank: None,
        peers: Vec::new(),
        cfg: Config::default(),
        env_file: None,
        stats: false,
        command: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{arg} needs a value")))
        };
        match arg.as_str() {
            "--transport" => a.transport = val(),
            "--rank" => a.rank = Some(val().parse().unwrap_or_else(|_| usage("bad --rank"))),
            "--peers" => {
                a.peers = val()
                    .split(',')
                    .map(|s| {
                        s.parse()
                            .unwrap_or_else(|_| usage(&format!("bad address {s:?}")))
                    })
                    .collect();
            }
            "--pool" => a.cfg.pool_name = val(),
            "--pool-size" => {
                a.cfg.pool_size = val().parse().unwrap_or_else(|_| usage("bad --pool-size"));
            }
            "--env-file" => a.env_file = Some(val()),
            "--stats" => a.stats = true,
            "--" => {
                a.command = it.by_ref().collect();
                break;
            }
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    a
}

fn main() -> ExitCode {
    let args = parse();
    match args.transport.as_str() {
        "tcp" => {
            let Some(rank) = args.rank else {
                usage("--transport tcp needs --rank and --peers")
            };
            match dragon_channels_gateway::TcpTransport::connect(rank, &args.peers) {
                Ok(t) => serve(t, &args),
                Err(e) => {
                    eprintln!("dragon-gateway: {e}");
                    ExitCode::from(1)
                }
            }
        }
        #[cfg(feature = "mpi")]
        "mpi" => match dragon_channels_gateway::MpiTransport::init() {
            Ok(t) => serve(t, &args),
            Err(e) => {
                eprintln!("dragon-gateway: {e}");
                ExitCode::from(1)
            }
        },
        other => usage(&format!(
            "transport {other:?} is not built in (mpi needs the `mpi` feature)"
        )),
    }
}

fn serve<T: Transport>(t: T, args: &Args) -> ExitCode {
    let (rank, size) = (t.rank(), t.size());
    let mut cfg = args.cfg.clone();
    if cfg.pool_name == Config::default().pool_name {
        cfg.pool_name = format!("dgw{rank}-{}", std::process::id());
    }
    let mut gw = match Gateway::new(t, &cfg) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("dragon-gateway (rank {rank}): cannot create its pool or channel: {e}");
            return ExitCode::from(1);
        }
    };
    let code = run(&mut gw, args, rank, size);
    if args.stats {
        eprintln!("dragon-gateway (rank {rank}): {:?}", gw.stats());
    }
    let pool = gw.pool().clone();
    drop(gw);
    let _ = pool.destroy();
    code
}

fn run<T: Transport>(gw: &mut Gateway<T>, args: &Args, rank: usize, size: usize) -> ExitCode {
    if let Err(e) = gw.wait_peers(Duration::from_secs(60)) {
        eprintln!("dragon-gateway (rank {rank}): {e}");
        return ExitCode::from(1);
    }
    let mut env = dragon_channels::remote::gateway_env(gw.channel());
    env.push(("DRAGON_GW_RANK", rank.to_string()));
    env.push(("DRAGON_GW_SIZE", size.to_string()));
    if let Some(path) = &args.env_file {
        let text: String = env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("dragon-gateway (rank {rank}): cannot write {path}: {e}");
            return ExitCode::from(1);
        }
    }
    let Some((prog, rest)) = args.command.split_first() else {
        gw.run(|| false);
        return ExitCode::SUCCESS;
    };
    let mut child: Child = match Command::new(prog).args(rest).envs(env).spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dragon-gateway (rank {rank}): cannot start {prog:?}: {e}");
            return ExitCode::from(1);
        }
    };
    let mut status = None;
    // Whether the client ended, asked at most once per CHILD_CHECK (a `waitpid` each turn
    // of the loop costs more than a small message's work).
    let mut checked = Instant::now();
    gw.run(|| {
        if status.is_none() && checked.elapsed() >= CHILD_CHECK {
            checked = Instant::now();
            status = child.try_wait().ok().flatten();
        }
        status.is_some()
    });
    match status.and_then(|s| s.code()) {
        Some(0) => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => {
            eprintln!("dragon-gateway (rank {rank}): the client was killed by a signal");
            ExitCode::from(1)
        }
    }
}
