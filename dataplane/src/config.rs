//! `dataplane --config FILE`: every option of a data plane run in one TOML
//! file, in sections (see `dist/dataplane.toml`, the commented example).
//!
//! The file is its own model ([`ConfigFile`]), not clap's structs: each
//! key names the flag it stands for, and a loaded file becomes that list
//! of flags, placed before the command line's so that a flag given on the
//! command line wins (`--queues 2` over `queues = 4`). Every value is
//! checked by the flag's own parser, so the file accepts exactly what the
//! flags accept, and a bad value is reported as `FILE:LINE: KEY: what is
//! wrong`; unknown keys and wrong types are refused with their line too.
//! Relative paths in the file are relative to the file's directory.

use std::{
    ffi::OsString,
    ops::Range,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use toml::Spanned;

/// A configuration file that cannot be used, with where it is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {reason}")]
    Read { file: String, reason: String },
    /// TOML syntax, unknown keys, wrong types.
    #[error("{file}:{line}: {message}")]
    Syntax {
        file: String,
        line: usize,
        message: String,
    },
    #[error("{file}:{line}: {key}: {message}")]
    Invalid {
        file: String,
        line: usize,
        key: String,
        message: String,
    },
}

/// One key of the file, as the flag it stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    /// `section.key`.
    pub key: String,
    pub flag: &'static str,
    /// None: a switch (`--mirror`), given when the key is true.
    pub value: Option<String>,
    /// Byte span of the value in the file.
    pub span: Range<usize>,
}

/// A value as a flag takes it.
trait AsArg {
    /// Some(None): the switch alone; None: nothing (a switch set to false).
    fn as_arg(&self, base: &Path) -> Option<Option<String>>;
}

impl AsArg for bool {
    fn as_arg(&self, _: &Path) -> Option<Option<String>> {
        self.then_some(None)
    }
}

impl AsArg for u32 {
    fn as_arg(&self, _: &Path) -> Option<Option<String>> {
        Some(Some(self.to_string()))
    }
}

impl AsArg for u64 {
    fn as_arg(&self, _: &Path) -> Option<Option<String>> {
        Some(Some(self.to_string()))
    }
}

impl AsArg for String {
    fn as_arg(&self, _: &Path) -> Option<Option<String>> {
        Some(Some(self.clone()))
    }
}

impl AsArg for PathBuf {
    fn as_arg(&self, base: &Path) -> Option<Option<String>> {
        Some(Some(base.join(self).display().to_string()))
    }
}

/// A number of seconds (or a count) written as an integer or a float.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Number {
    Int(i64),
    Float(f64),
}

impl AsArg for Number {
    fn as_arg(&self, _: &Path) -> Option<Option<String>> {
        Some(Some(match self {
            Number::Int(n) => n.to_string(),
            Number::Float(f) => f.to_string(),
        }))
    }
}

/// A count or a word (`sniff_packets = 8` or `"unlimited"`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum CountOrWord {
    Count(i64),
    Word(String),
}

impl AsArg for CountOrWord {
    fn as_arg(&self, _: &Path) -> Option<Option<String>> {
        Some(Some(match self {
            CountOrWord::Count(n) => n.to_string(),
            CountOrWord::Word(w) => w.clone(),
        }))
    }
}

/// A section of the file: its keys, each with the flag it stands for.
macro_rules! section {
    ($(#[$doc:meta])* $name:ident, $section:literal { $($field:ident: $ty:ty => $flag:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $(pub $field: Option<Spanned<$ty>>,)*
        }

        impl $name {
            /// Every flag of this section, as (key, flag).
            pub const FLAGS: &'static [(&'static str, &'static str)] =
                &[$((concat!($section, ".", stringify!($field)), $flag),)*];

            fn settings(&self, base: &Path, out: &mut Vec<Setting>) {
                $(
                    if let Some(v) = &self.$field {
                        if let Some(value) = v.get_ref().as_arg(base) {
                            out.push(Setting {
                                key: concat!($section, ".", stringify!($field)).into(),
                                flag: $flag,
                                value,
                                span: v.span(),
                            });
                        }
                    }
                )*
            }
        }
    };
}

section!(
    /// `[interface]`: where and how the data plane attaches.
    Interface, "interface" {
        iface: String => "--iface",
        peer: String => "--peer",
        mirror: bool => "--mirror",
        xdp_mode: String => "--xdp-mode",
        force: bool => "--force",
    }
);

section!(
    /// `[workers]`: queues, cores and the flow tables.
    Workers, "workers" {
        queues: u32 => "--queues",
        cores: String => "--cores",
        batch: u32 => "--batch",
        busy_poll: bool => "--busy-poll",
        flow_table_size: u32 => "--flow-table-size",
        trust_rss: bool => "--trust-rss",
        allow_unserved_queues: bool => "--allow-unserved-queues",
    }
);

section!(
    /// `[af_xdp]`: socket and UMEM sizing.
    AfXdp, "af_xdp" {
        zero_copy: String => "--zero-copy",
        ring_size: u32 => "--ring-size",
        frame_size: u32 => "--frame-size",
    }
);

section!(
    /// `[inspection]`: rules, policy and when the kernel takes a flow.
    Inspection, "inspection" {
        dpi: bool => "--dpi",
        rules: PathBuf => "--rules",
        vars: PathBuf => "--vars",
        lenient: bool => "--lenient",
        policy: PathBuf => "--policy",
        max_user_packets: u32 => "--max-user-packets",
        sniff_packets: CountOrWord => "--sniff-packets",
    }
);

section!(
    /// `[timeouts]`: idle timeouts in seconds.
    Timeouts, "timeouts" {
        tcp: Number => "--timeout-tcp",
        tcp_closing: Number => "--timeout-tcp-closing",
        udp: Number => "--timeout-udp",
        other: Number => "--timeout-other",
    }
);

section!(
    /// `[kernel]`: the verdict maps, pins and what happens when user space
    /// cannot take traffic.
    Kernel, "kernel" {
        verdict_map_size: u32 => "--verdict-map-size",
        pin: PathBuf => "--pin",
        on_failure: String => "--on-failure",
        failure_grace_ms: u64 => "--failure-grace-ms",
    }
);

section!(
    /// `[outputs]`: logs, exports, stats, metrics, control.
    Outputs, "outputs" {
        eve: PathBuf => "--eve",
        flow_log: PathBuf => "--flow-log",
        ipfix: String => "--ipfix",
        ipfix_active_timeout: Number => "--ipfix-active-timeout",
        stats_json: PathBuf => "--stats-json",
        stats_interval: Number => "--stats-interval",
        latency_hgrm: PathBuf => "--latency-hgrm",
        metrics: String => "--metrics",
        control: PathBuf => "--control",
        no_control: bool => "--no-control",
        log_format: String => "--log-format",
    }
);

section!(
    /// `[balancer]`: load balancer mode and its services file.
    Balancer, "balancer" {
        services: PathBuf => "--lb",
    }
);

section!(
    /// `[run]`: how long to run.
    Run, "run" {
        duration: Number => "--duration",
    }
);

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub interface: Interface,
    #[serde(default)]
    pub workers: Workers,
    #[serde(default)]
    pub af_xdp: AfXdp,
    #[serde(default)]
    pub inspection: Inspection,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub kernel: Kernel,
    #[serde(default)]
    pub outputs: Outputs,
    #[serde(default)]
    pub balancer: Balancer,
    #[serde(default)]
    pub run: Run,
}

/// Every (key, flag) the file knows.
pub fn all_flags() -> Vec<(&'static str, &'static str)> {
    [
        Interface::FLAGS,
        Workers::FLAGS,
        AfXdp::FLAGS,
        Inspection::FLAGS,
        Timeouts::FLAGS,
        Kernel::FLAGS,
        Outputs::FLAGS,
        Balancer::FLAGS,
        Run::FLAGS,
    ]
    .concat()
}

/// The line (from 1) of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text[..at.min(text.len())].matches('\n').count() + 1
}

impl ConfigFile {
    /// Parses `text`; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<ConfigFile, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Syntax {
            file: file.to_string(),
            line: e.span().map_or(0, |s| line_of(text, s.start)),
            message: e.message().trim_end().to_string(),
        })
    }

    /// The flags the file stands for, in file section order; relative
    /// paths are taken from `base`.
    pub fn settings(&self, base: &Path) -> Vec<Setting> {
        let mut out = Vec::new();
        self.interface.settings(base, &mut out);
        self.workers.settings(base, &mut out);
        self.af_xdp.settings(base, &mut out);
        self.inspection.settings(base, &mut out);
        self.timeouts.settings(base, &mut out);
        self.kernel.settings(base, &mut out);
        self.outputs.settings(base, &mut out);
        self.balancer.settings(base, &mut out);
        self.run.settings(base, &mut out);
        out
    }
}

/// Reads `path`, checks every value with its flag's parser (`check`
/// returns the parser's complaint), and returns the flags it stands for.
pub fn load(
    path: &Path,
    check: impl Fn(&Setting) -> Result<(), String>,
) -> Result<Vec<OsString>, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        file: file.clone(),
        reason: e.to_string(),
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let settings = ConfigFile::parse(&file, &text)?.settings(base);
    let mut args = Vec::new();
    for setting in &settings {
        check(setting).map_err(|message| ConfigError::Invalid {
            file: file.clone(),
            line: line_of(&text, setting.span.start),
            key: setting.key.clone(),
            message,
        })?;
        args.push(OsString::from(setting.flag));
        if let Some(value) = &setting.value {
            args.push(OsString::from(value));
        }
    }
    Ok(args)
}

/// The command line with `--config FILE` (or `--config=FILE`) replaced by
/// the flags of FILE, put first so that the command line's own flags win.
/// `check` validates each setting (see [`load`]). Without `--config`, the
/// command line as it is.
pub fn expand(
    args: Vec<OsString>,
    check: impl Fn(&Setting) -> Result<(), String>,
) -> Result<Vec<OsString>, ConfigError> {
    let mut rest = Vec::with_capacity(args.len());
    let mut config: Option<PathBuf> = None;
    let mut iter = args.into_iter();
    let program = iter.next();
    while let Some(arg) = iter.next() {
        if arg == "--" {
            rest.push(arg);
            rest.extend(iter.by_ref());
            break;
        }
        if arg == "--config" {
            match iter.next() {
                Some(path) => config = Some(PathBuf::from(path)),
                // clap reports the missing value
                None => rest.push(arg),
            }
        } else if let Some(path) = arg.to_str().and_then(|a| a.strip_prefix("--config=")) {
            config = Some(PathBuf::from(path));
        } else {
            rest.push(arg);
        }
    }
    let mut out: Vec<OsString> = program.into_iter().collect();
    if let Some(path) = config {
        out.extend(load(&path, check)?);
    }
    out.extend(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Setting>, ConfigError> {
        Ok(ConfigFile::parse("t.toml", text)?.settings(Path::new("/etc/dataplane")))
    }

    #[test]
    fn keys_become_their_flags_and_paths_follow_the_file() {
        let s = parse(
            "[interface]\niface = \"eth1\"\nmirror = true\nforce = false\n\
             [inspection]\nrules = \"rules/local.rules\"\nsniff_packets = \"unlimited\"\n\
             [timeouts]\ntcp = 120\nudp = 2.5\n",
        )
        .unwrap();
        let flat: Vec<(&str, Option<&str>)> =
            s.iter().map(|s| (s.flag, s.value.as_deref())).collect();
        assert_eq!(
            flat,
            vec![
                ("--iface", Some("eth1")),
                ("--mirror", None),
                ("--rules", Some("/etc/dataplane/rules/local.rules")),
                ("--sniff-packets", Some("unlimited")),
                ("--timeout-tcp", Some("120")),
                ("--timeout-udp", Some("2.5")),
            ]
        );
        assert_eq!(s[0].key, "interface.iface");
    }

    #[test]
    fn unknown_keys_and_wrong_types_name_their_line() {
        let e = parse("[workers]\nqueues = 2\nqueus = 4\n").unwrap_err();
        assert!(
            matches!(&e, ConfigError::Syntax { line: 3, message, .. } if message.contains("queus")),
            "{e}"
        );
        let e = parse("[workers]\n\nqueues = \"four\"\n").unwrap_err();
        assert!(matches!(&e, ConfigError::Syntax { line: 3, .. }), "{e}");
        let e = parse("[nonsense]\n").unwrap_err();
        assert!(matches!(&e, ConfigError::Syntax { line: 1, .. }), "{e}");
    }

    #[test]
    fn the_command_line_comes_after_the_file() {
        let dir = std::env::temp_dir().join(format!("dp-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("dp.toml");
        std::fs::write(&path, "[workers]\nqueues = 4\n").unwrap();
        let args: Vec<OsString> = [
            "dataplane",
            "--config",
            path.to_str().unwrap(),
            "--queues",
            "2",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let out = expand(args, |_| Ok(())).unwrap();
        assert_eq!(out, ["dataplane", "--queues", "4", "--queues", "2"]);
        let refused = expand(
            vec![
                "dataplane".into(),
                format!("--config={}", path.display()).into(),
            ],
            |s| Err(format!("{} is not liked", s.flag)),
        )
        .unwrap_err();
        assert_eq!(
            refused.to_string(),
            format!(
                "{}:2: workers.queues: --queues is not liked",
                path.display()
            )
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
