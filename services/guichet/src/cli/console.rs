//! `guichet console hash-password`: the argon2 hash of a local account's
//! password, for `[[console.auth.accounts]] password_hash`.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::Context;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum ConsoleCommand {
    /// Read a password (the first line of standard input) and print its
    /// argon2id hash. The password is neither stored nor logged.
    HashPassword,
}

pub fn run(command: ConsoleCommand) -> anyhow::Result<()> {
    match command {
        ConsoleCommand::HashPassword => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprint!("Mot de passe (12 caractères au moins ; il s'affiche, effacez l'écran ensuite) : ");
                let _ = std::io::stderr().flush();
            }
            let mut line = String::new();
            stdin
                .lock()
                .read_line(&mut line)
                .context("reading the password from standard input")?;
            let password = line.trim_end_matches(['\r', '\n']);
            let hash = guichet_console::web::hash_password(password)?;
            println!("{hash}");
            Ok(())
        }
    }
}
