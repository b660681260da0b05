//! `offsite completions SHELL` and `offsite man`: generated from the clap definitions in
//! `cli.rs`, so they never disagree with `--help`.

use super::Outcome;
use crate::cli::Cli;
use anyhow::Result;
use clap::CommandFactory;

/// Prints the completion script for `shell` on stdout.
pub fn completions(shell: clap_complete::Shell) -> Result<Outcome> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "offsite", &mut out);
    crate::ui::out_bytes(&out)?;
    Ok(Outcome::Done)
}

/// Prints `offsite(1)` as roff on stdout: the top page, then one section per command.
pub fn man() -> Result<Outcome> {
    Ok(crate::ui::out_bytes(&man_page()?).map(|_| Outcome::Done)?)
}

/// The page: clap_mangen's rendering of `offsite`, with each command's options appended as
/// its own section (clap_mangen renders subcommands as a list of names only).
pub fn man_page() -> std::io::Result<Vec<u8>> {
    let cmd = Cli::command();
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut out)?;
    for sub in cmd.get_subcommands() {
        let name = format!("offsite {}", sub.get_name());
        out.extend_from_slice(format!(".SH \"{}\"\n", name.to_uppercase()).as_bytes());
        let sub = sub.clone().bin_name(name);
        let man = clap_mangen::Man::new(sub);
        man.render_description_section(&mut out)?;
        man.render_synopsis_section(&mut out)?;
        man.render_options_section(&mut out)?;
    }
    Ok(out)
}
