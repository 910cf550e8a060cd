//! `cargo xtask dist`: shell completions and man pages, generated from the same clap
//! definitions the binary parses with, so they cannot drift from it.

use std::fs;
use std::path::Path;

use anyhow::Result;
use clap::CommandFactory;
use clap_complete::Shell;
use kyrodb_backup_cli::Cli;

use crate::util::root;

/// `cargo xtask dist` takes no arguments.
#[derive(Debug, Clone, Copy, clap::Args)]
pub(crate) struct Args {}

/// Writes `target/dist/completions/*` and `target/dist/man/*.1`.
pub(crate) fn run(Args {}: Args) -> Result<()> {
    let out = root().join("target/dist");
    let completions = out.join("completions");
    let man = out.join("man");
    fs::create_dir_all(&completions)?;
    fs::create_dir_all(&man)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let path =
            clap_complete::generate_to(shell, &mut Cli::command(), "kyrodb_backup", &completions)?;
        println!("wrote {}", path.display());
    }
    let cmd = Cli::command();
    write_man(&cmd, "kyrodb_backup", &man)?;
    for sub in cmd.get_subcommands() {
        let name = format!("kyrodb_backup-{}", sub.get_name());
        write_man(sub, &name, &man)?;
    }
    Ok(())
}

/// Writes the man page of `cmd`, named `name`, into `dir`.
fn write_man(cmd: &clap::Command, name: &str, dir: &Path) -> Result<()> {
    let cmd = cmd.clone().name(name.to_string());
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut buf)?;
    let path = dir.join(format!("{name}.1"));
    fs::write(&path, buf)?;
    println!("wrote {}", path.display());
    Ok(())
}
