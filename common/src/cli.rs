//! Man pages and shell completions, generated from a binary's own `clap` definition so they
//! never drift from it. The Debian package runs these at build time and installs the output.
use std::io::Write;
use std::path::{Path, PathBuf};

/// The hidden `man` and `completions` subcommands of every binary, flattened into its own
/// command enum (`#[command(flatten)] Docs(DocsCommand)`).
#[derive(Debug, clap::Subcommand)]
pub enum DocsCommand {
    /// Write the man pages into a directory.
    #[command(hide = true)]
    Man {
        /// Output directory.
        dir: PathBuf,
    },
    /// Print a shell completion script.
    #[command(hide = true)]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

impl DocsCommand {
    /// Writes the pages or prints the script for `command`, the binary's whole definition.
    pub fn run(self, command: clap::Command) -> std::io::Result<()> {
        match self {
            Self::Man { dir } => {
                let written = write_man_pages(command, &dir)?;
                println!("{} man pages in {}", written.len(), dir.display());
                Ok(())
            }
            Self::Completions { shell } => print_completions(command, shell),
        }
    }
}

/// Writes `NAME.1` and `NAME-SUB.1` (one per subcommand, recursively) into `dir`.
pub fn write_man_pages(command: clap::Command, dir: &Path) -> std::io::Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    write_page(command.clone(), command.get_name().to_owned(), dir, &mut written)?;
    Ok(written)
}

fn write_page(command: clap::Command, name: String, dir: &Path, written: &mut Vec<String>) -> std::io::Result<()> {
    let command = command.name(name.clone());
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone()).render(&mut page)?;
    let file = format!("{name}.1");
    std::fs::write(dir.join(&file), page)?;
    written.push(file);
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_page(sub.clone(), format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}

/// Prints the completion script for `shell` (bash, zsh, fish, …).
pub fn print_completions(mut command: clap::Command, shell: clap_complete::Shell) -> std::io::Result<()> {
    let name = command.get_name().to_owned();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command, name, &mut out);
    std::io::stdout().write_all(&out)
}
