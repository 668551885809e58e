//! `dragon-channels`: see, repair and clean up dragon-channels pools in `/dev/shm`.
//!
//! For people who run programs on pools: which pools exist and what state they are in
//! (`ls`), what is inside one (`inspect`), reclaiming what dead processes left in one
//! (`recover`), and removing pools (`rm`) and stale files (`gc`). Human tables by default,
//! `--json` for scripts, and exit codes a script can rely on ([`Exit`]).
//!
//! The tool is built on the library's inspection API only (`dragon_channels::MemoryPool::
//! probe`, `list`, `observe`): it reads headers without attaching where that is enough and
//! attaches as an observer where it must read inside a pool, so it never counts as a user
//! of a pool (an abandoned pool stays abandoned while it is looked at, and `rm` is not
//! refused because of the tool itself).
//!
//! One file per concept: `main.rs` (arguments, exit codes), `gather.rs` (what the library
//! says about a pool, as plain data), `render.rs` (tables, sizes), `remove.rs` (`rm`, `gc`).

mod gather;
mod remove;
mod render;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dragon_channels::MemoryPoolError;

/// Exit codes (also in `--help` and the README).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Done.
    Ok = 0,
    /// Bad arguments or a bad pool name.
    Usage = 1,
    /// No file of that name in /dev/shm.
    NotFound = 2,
    /// Refused: live processes use the pool (or its creator still runs); `--force` overrides.
    InUse = 3,
    /// Any other error: I/O, a corrupt pool, a pool that needs `recover` first, `recover` of
    /// a file that holds no finished pool.
    Other = 4,
    /// Refused: the file is not a dragon-channels pool (another program's, perhaps);
    /// `rm --force` removes it anyway.
    NotAPool = 5,
}

impl Exit {
    /// The exit code for a library error.
    pub(crate) fn of(e: &MemoryPoolError) -> Self {
        match e {
            MemoryPoolError::BadName { .. } => Self::Usage,
            MemoryPoolError::NotFound(_) => Self::NotFound,
            MemoryPoolError::NotAPool { .. } => Self::NotAPool,
            _ => Self::Other,
        }
    }
}

/// The failure of a command: what to print on stderr and the exit code.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) exit: Exit,
    pub(crate) message: String,
}

impl From<MemoryPoolError> for Failure {
    fn from(e: MemoryPoolError) -> Self {
        Self {
            exit: Exit::of(&e),
            message: e.to_string(),
        }
    }
}

const EXIT_CODES: &str = "\
Exit codes:
  0  done
  1  bad arguments or pool name
  2  no file of that name in /dev/shm
  3  refused: live processes use the pool (or its creator still runs); rm --force overrides
  4  other error (I/O, a corrupt pool, a dead process holds the pool lock: run recover
     first; recover of a file that holds no finished pool)
  5  refused: the file is not a dragon-channels pool; rm --force removes it anyway

States (ls, inspect):
  ok            a pool with at least one live process
  abandoned     a pool whose every process is dead (gc removes it; attaching takes it over)
  creating      its creator, still running, is initializing it
  half-created  its creator died before finishing it (gc removes it)
  destroyed     destroyed, but its file was left behind (gc removes it)
  not-a-pool    too short, zero-filled, foreign bytes or another layout version";

/// See, repair and clean up dragon-channels pools in /dev/shm.
#[derive(Debug, Parser)]
#[command(name = "dragon-channels", version, after_help = EXIT_CODES)]
struct Cli {
    /// Print JSON for scripts instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the pools in /dev/shm: size, bytes used and reserved, parties, channels, state.
    ///
    /// Lists files that carry a pool header, and files of this user with mode 0600 (as pools
    /// are made) that hold nothing: a creator killed before writing one.
    Ls {
        /// List every file in /dev/shm (other programs' too, as not-a-pool).
        #[arg(long)]
        all: bool,
        /// Only names that start with this.
        #[arg(long, default_value = "")]
        prefix: String,
    },
    /// Show what is inside a pool: channels, allocations by owner and kind, free blocks per
    /// size, parties.
    Inspect {
        /// The pool name (the file name in /dev/shm).
        name: String,
    },
    /// Reclaim what dead processes left in a pool: a pool lock they held, their
    /// allocations, channel slots they claimed, messages they were sending or receiving.
    Recover {
        /// The pool name.
        name: String,
    },
    /// Remove a pool's file. Refused while live processes use the pool, and for a file that
    /// holds another program's data, unless --force.
    Rm {
        /// The pool name.
        name: String,
        /// Remove even a pool in use (its processes keep their mapping; new attaches fail)
        /// or a file that is not a pool.
        #[arg(long)]
        force: bool,
    },
    /// Remove every abandoned pool (every process dead), half-created file (creator dead)
    /// and file left behind by a destroy, and say what was removed.
    Gc {
        /// Only say what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// Only names that start with this (e.g. your application's pools).
        #[arg(long, default_value = "")]
        prefix: String,
    },
}

fn run(cli: &Cli) -> Result<(), Failure> {
    let json = cli.json;
    match &cli.command {
        Command::Ls { all, prefix } => {
            let rows = gather::list(*all, prefix)?;
            if json {
                render::print_json(&rows);
            } else {
                print!("{}", render::ls_table(&rows));
            }
            Ok(())
        }
        Command::Inspect { name } => {
            let (report, failure) = gather::inspect(name)?;
            if json {
                render::print_json(&report);
            } else {
                print!("{}", render::inspect_text(&report));
            }
            failure.map_or(Ok(()), Err)
        }
        Command::Recover { name } => {
            let report = gather::recover(name)?;
            if json {
                render::print_json(&report);
            } else {
                print!("{}", render::recover_text(&report));
            }
            Ok(())
        }
        Command::Rm { name, force } => {
            let done = remove::rm(name, *force)?;
            if json {
                render::print_json(&done);
            } else {
                println!("{}", done.message);
            }
            Ok(())
        }
        Command::Gc { dry_run, prefix } => {
            let report = remove::gc(*dry_run, prefix)?;
            if json {
                render::print_json(&report);
            } else {
                print!("{}", render::gc_text(&report));
            }
            if report.failed.is_empty() {
                Ok(())
            } else {
                Err(Failure {
                    exit: Exit::Other,
                    message: format!("{} files could not be removed", report.failed.len()),
                })
            }
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // Help and version go to stdout with success; usage errors exit 1 (clap's own
            // exit code for them, 2, is "not found" here).
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                Exit::Usage as u8
            } else {
                Exit::Ok as u8
            });
        }
    };
    match run(&cli) {
        Ok(()) => ExitCode::from(Exit::Ok as u8),
        Err(f) => {
            eprintln!("dragon-channels: {}", f.message);
            ExitCode::from(f.exit as u8)
        }
    }
}
