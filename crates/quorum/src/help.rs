//! The command line's help: etcd's connection flags shown only where they apply, and example
//! command lines folded to fit an 80-column terminal (clap would wrap them mid-command).

use std::io::Write;
use std::path::Path;

use clap::{Args, CommandFactory};

use crate::exit::Failure;

/// The command line's definition, with etcd's connection flags hidden from the help of every
/// command that does not connect to etcd. clap copies a global flag into a subcommand only
/// where the subcommand has none of that name, so each command gets its own copy, visible or
/// hidden, before clap would copy the top level's.
pub fn cli_command() -> clap::Command {
    fn own_copies(cmd: clap::Command, path: &mut Vec<String>, conn: &[clap::Arg]) -> clap::Command {
        let names: Vec<String> = cmd.get_subcommands().map(|s| s.get_name().to_string()).collect();
        let mut cmd = cmd;
        for name in names {
            path.push(name.clone());
            let p: Vec<&str> = path.iter().map(String::as_str).collect();
            let hide = !crate::talks_to_etcd(&p);
            cmd = cmd.mut_subcommand(&name, |sub| {
                let sub = conn.iter().fold(sub, |sub, a| sub.arg(a.clone().hide(hide)));
                own_copies(sub, path, conn)
            });
            path.pop();
        }
        cmd
    }
    let cmd = crate::Cli::command();
    let conn: Vec<clap::Arg> = crate::live::Conn::augment_args(clap::Command::new("conn")).get_arguments().cloned().collect();
    folded(own_copies(cmd, &mut Vec::new(), &conn))
}

/// Widest example line: fits an 80-column terminal with the indent.
const WIDTH: usize = 78;

/// Every command's examples folded with [`fold_examples`].
fn folded(cmd: clap::Command) -> clap::Command {
    let cmd = match cmd.get_after_help() {
        Some(h) => {
            let text = fold_examples(&h.to_string(), WIDTH);
            cmd.after_help(text)
        }
        None => cmd,
    };
    let names: Vec<String> = cmd.get_subcommands().map(|s| s.get_name().to_string()).collect();
    names.iter().fold(cmd, |cmd, n| cmd.mut_subcommand(n, folded))
}

/// Fold example command lines (`  quorum ...`, `  ETCDCTL_...=... quorum ...`) longer than
/// `width` before a flag, continued with ` \` on an indented next line, as a person would type
/// them; a line already continued with ` \` joins its continuation first. Prose lines wrapped in
/// the source join into paragraphs, which clap wraps to the terminal.
pub fn fold_examples(text: &str, width: usize) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let is_command = line.starts_with("  ") && line.split_whitespace().any(|w| w == "quorum");
        if !is_command {
            // Prose wrapped by hand in the source is one paragraph for clap to wrap to the
            // terminal; indented and blank lines keep their breaks.
            let prose = |l: &str| !l.is_empty() && !l.starts_with(' ');
            match out.last_mut() {
                // A line that introduces an indented block (`Keys:` above its list) stays apart.
                Some(prev) if prose(line) && prose(prev) && !prev.ends_with(':') && !lines.peek().is_some_and(|n| n.starts_with("  ")) => {
                    prev.push(' ');
                    prev.push_str(line);
                }
                _ => out.push(line.to_string()),
            }
            continue;
        }
        let mut cmdline = line.trim_end().to_string();
        while cmdline.ends_with(" \\") {
            let Some(next) = lines.next() else { break };
            cmdline.truncate(cmdline.len() - 2);
            cmdline = format!("{} {}", cmdline.trim_end(), next.trim());
        }
        // A trailing `# comment` stays with the last piece.
        let (words, comment) = match cmdline.find("  #") {
            Some(i) => (&cmdline[..i], Some(cmdline[i..].trim())),
            None => (cmdline.as_str(), None),
        };
        // A flag and its values are one group; lines break between groups.
        let mut groups: Vec<String> = Vec::new();
        for w in words.split_whitespace() {
            match groups.last_mut() {
                Some(g) if !w.starts_with('-') => {
                    g.push(' ');
                    g.push_str(w);
                }
                _ => groups.push(w.to_string()),
            }
        }
        let mut pieces: Vec<String> = Vec::new();
        for g in groups {
            match pieces.last_mut() {
                Some(p) if p.len() + 1 + g.len() + 2 <= width => {
                    p.push(' ');
                    p.push_str(&g);
                }
                Some(_) => pieces.push(format!("    {g}")),
                None => pieces.push(format!("  {g}")),
            }
        }
        // A comment too long to follow the command goes on its own line above it.
        let last = pieces.last().map_or(0, String::len);
        let comment = match comment {
            Some(c) if last + 3 + c.len() > width => {
                out.push(format!("  {c}"));
                None
            }
            c => c,
        };
        let n = pieces.len();
        for (i, p) in pieces.into_iter().enumerate() {
            if i + 1 < n {
                out.push(format!("{p} \\"));
            } else if let Some(c) = comment {
                out.push(format!("{p}   {c}"));
            } else {
                out.push(p);
            }
        }
    }
    out.join("\n")
}

/// `quorum completions SHELL`: the script on stdout.
pub fn completions(shell: clap_complete::Shell) -> Result<(), Failure> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cli_command(), "quorum", &mut out);
    crate::output::written(std::io::stdout().write_all(&out))
}

/// `quorum man`: quorum(1) on stdout, or with a directory every command's page written there.
pub fn man(dir: Option<&Path>) -> Result<(), Failure> {
    let cmd = cli_command();
    match dir {
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut out).map_err(|e| Failure::failed(format!("rendering the manual page: {e}")))?;
            crate::output::written(std::io::stdout().write_all(&out))
        }
        Some(d) => {
            if !d.is_dir() {
                return Err(Failure::usage(format!("{} is not a directory", d.display())).with_hint(format!("mkdir -p {}", d.display())));
            }
            clap_mangen::generate_to(cmd, d).map_err(|e| Failure::failed(format!("writing manual pages into {}: {e}", d.display())))?;
            println!("wrote quorum.1 and quorum-COMMAND.1 for every command into {}", d.display());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every leaf command, with its path.
    fn leaves(cmd: &clap::Command, path: &mut Vec<String>, out: &mut Vec<(String, clap::Command)>) {
        let subs: Vec<_> = cmd.get_subcommands().filter(|s| s.get_name() != "help").collect();
        if subs.is_empty() {
            out.push((path.join(" "), cmd.clone()));
        }
        for s in subs {
            path.push(s.get_name().to_string());
            leaves(s, path, out);
            path.pop();
        }
    }

    fn all() -> Vec<(String, clap::Command)> {
        let mut cmd = cli_command();
        cmd.build();
        let mut out = Vec::new();
        leaves(&cmd, &mut vec!["quorum".to_string()], &mut out);
        out
    }

    #[test]
    fn every_flag_has_a_description() {
        let mut missing = Vec::new();
        for (path, c) in all() {
            for a in c.get_arguments() {
                if a.is_hide_set() || ["help", "version"].contains(&a.get_id().as_str()) {
                    continue;
                }
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path} {}", a.get_id()));
                }
            }
        }
        assert!(missing.is_empty(), "arguments without a description:\n{}", missing.join("\n"));
    }

    #[test]
    fn every_command_ends_with_examples() {
        let missing: Vec<_> =
            all().into_iter().filter(|(_, c)| !c.get_after_help().map(|h| h.to_string().contains("Examples:")).unwrap_or(false)).map(|(p, _)| p).collect();
        assert!(missing.is_empty(), "commands without examples:\n{}", missing.join("\n"));
    }

    fn help(path: &[&str]) -> String {
        let mut cmd = cli_command();
        let mut c = &mut cmd;
        for p in path {
            c = c.find_subcommand_mut(p).expect("a command");
        }
        c.render_long_help().to_string()
    }

    #[test]
    fn etcd_flags_show_only_where_they_apply_under_headings() {
        for path in [&["snapshot", "restore"][..], &["repo", "init"], &["k8s", "get"], &["backups", "list"], &["restore"], &["drill"], &["numa", "fit"]] {
            let h = help(path);
            for flag in ["--endpoints", "--cacert", "--cert ", "--key ", "--user", "--password ", "--dial-timeout"] {
                assert!(!h.contains(flag), "{path:?} shows {flag}:\n{h}");
            }
        }
        for path in [&["status"][..], &["snapshot", "save"], &["backup"], &["member", "add"], &["recover", "plan"]] {
            let h = help(path);
            assert!(h.contains("etcd connection and TLS:") && h.contains("--endpoints") && h.contains("--cacert"), "{path:?}:\n{h}");
        }
        let h = help(&["backup"]);
        assert!(h.contains("Repository:") && h.contains("--password-file") && h.contains("Output:"), "{h}");
        let (conn, repo) = (h.find("etcd connection and TLS:").unwrap(), h.find("Repository:").unwrap());
        let section = |at: usize| &h[at..h[at..].find("\n\n").map(|e| at + e).unwrap_or(h.len())];
        assert!(!section(conn).contains("--password-file") && !section(repo).contains("--cacert"), "{h}");
    }

    #[test]
    fn long_examples_fold_between_flags() {
        let text = "Examples:\n  quorum restore --repo file:///var/backups/etcd latest --cluster prod --name m1 \\\n    --initial-cluster m1=https://10.0.0.1:2380 --data-dir /var/lib/etcd   # comment\n\nProse stays as it is, however long the line happens to be in the source text.";
        let out = fold_examples(text, 60);
        assert_eq!(
            out,
            "Examples:\n  quorum restore --repo file:///var/backups/etcd latest \\\n    --cluster prod --name m1 \\\n    --initial-cluster m1=https://10.0.0.1:2380 \\\n    --data-dir /var/lib/etcd   # comment\n\nProse stays as it is, however long the line happens to be in the source text."
        );
        assert_eq!(fold_examples("  quorum status -w json", 60), "  quorum status -w json");
        assert_eq!(fold_examples("Checks: one,\ntwo.\n\nExit 0.\nKeys:\n  a  b\n  c", 60), "Checks: one, two.\n\nExit 0.\nKeys:\n  a  b\n  c");
    }

    #[test]
    fn example_lines_fit_80_columns() {
        let mut cmd = cli_command();
        cmd.build();
        let mut wide = Vec::new();
        let mut stack = vec![cmd];
        while let Some(c) = stack.pop() {
            if let Some(h) = c.get_after_help() {
                for l in h.to_string().lines() {
                    let cmdline = l.starts_with("  ") && l.split_whitespace().any(|w| w == "quorum");
                    // A line is as wide as it must be when it is one flag with its value.
                    if cmdline && l.chars().count() > 80 && l.trim().matches(" -").count() > 0 {
                        wide.push(format!("{}: {l}", c.get_name()));
                    }
                }
            }
            stack.extend(c.get_subcommands().cloned());
        }
        assert!(wide.is_empty(), "example lines wider than 80 columns:\n{}", wide.join("\n"));
    }
}
