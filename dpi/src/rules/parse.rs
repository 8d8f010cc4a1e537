//! The rule text parser: header, options, contents, pcre, variables.

use std::{collections::HashMap, net::IpAddr, path::Path};

use super::{
    Action, AddrSet, Buffer, ByteOp, ByteRead, Content, FlagsMode, FlagsTest, FlowOpts, Flowbit,
    FlowbitCmd, JumpFrom, MAX_BYTE_VARS, Matcher, Num, PortSet, Rule, RuleError, Threshold,
    ThresholdKind, Track, UintTest,
};
use crate::classify::Protocol;

/// Address and port variables (`$HOME_NET`...), from a TOML vars file:
///
/// ```toml
/// [address-groups]
/// HOME_NET = "[198.18.0.0/15]"
/// EXTERNAL_NET = "!$HOME_NET"
/// [port-groups]
/// HTTP_PORTS = "[80,8080]"
/// ```
#[derive(Clone, Debug)]
pub struct Vars {
    addresses: HashMap<String, String>,
    ports: HashMap<String, String>,
}

impl Default for Vars {
    /// Suricata's shipped defaults for the variables most rule sets use,
    /// with HOME_NET and EXTERNAL_NET both `any` until a vars file says otherwise.
    fn default() -> Self {
        let addresses = [
            "HOME_NET",
            "EXTERNAL_NET",
            "HTTP_SERVERS",
            "SMTP_SERVERS",
            "SQL_SERVERS",
            "DNS_SERVERS",
            "TELNET_SERVERS",
        ]
        .into_iter()
        .map(|k| (k.to_string(), "any".to_string()))
        .collect();
        let ports = [
            ("HTTP_PORTS", "80"),
            ("SHELLCODE_PORTS", "!80"),
            ("ORACLE_PORTS", "1521"),
            ("SSH_PORTS", "22"),
            ("DNP3_PORTS", "20000"),
            ("MODBUS_PORTS", "502"),
            ("FILE_DATA_PORTS", "[$HTTP_PORTS,110,143]"),
            ("FTP_PORTS", "21"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Vars { addresses, ports }
    }
}

impl Vars {
    /// Parses a TOML vars file over the defaults.
    pub fn parse(text: &str, file: &Path) -> Result<Vars, RuleError> {
        let error = |line: usize, message: String| RuleError {
            file: file.into(),
            line,
            message,
        };
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let line = e.span().map_or(0, |s| {
                text[..s.start.min(text.len())].matches('\n').count() + 1
            });
            error(line, e.message().to_string())
        })?;
        let mut vars = Vars::default();
        for (section, value) in table {
            let target = match section.as_str() {
                "address-groups" => &mut vars.addresses,
                "port-groups" => &mut vars.ports,
                other => {
                    return Err(error(
                        0,
                        format!(
                            "unknown section [{other}] (expected [address-groups] or [port-groups])"
                        ),
                    ));
                }
            };
            let toml::Value::Table(entries) = value else {
                return Err(error(0, format!("[{section}] must be a table")));
            };
            for (name, value) in entries {
                let toml::Value::String(v) = value else {
                    return Err(error(0, format!("{section}.{name} must be a string")));
                };
                target.insert(name, v);
            }
        }
        Ok(vars)
    }

    /// Reads a vars file.
    pub fn load(path: &Path) -> Result<Vars, RuleError> {
        let text = std::fs::read_to_string(path).map_err(|e| RuleError {
            file: path.into(),
            line: 0,
            message: format!("cannot read: {e}"),
        })?;
        Vars::parse(&text, path)
    }
}

/// Why a rule did not parse; `unsupported` marks keywords we do not have
/// (skippable in lenient mode), as opposed to malformed rules.
#[derive(Debug)]
pub(crate) struct ParseError {
    pub message: String,
    /// What is unsupported, when that is why (a lenient load skips the rule).
    pub unsupported: Option<String>,
}

fn bad(message: impl Into<String>) -> ParseError {
    ParseError {
        message: message.into(),
        unsupported: None,
    }
}

/// Something valid in Suricata that is not supported here; `what` names it
/// for the `--lenient` summary (`keyword base64_decode`).
fn unsupported(what: impl Into<String>, message: impl Into<String>) -> ParseError {
    ParseError {
        message: message.into(),
        unsupported: Some(what.into()),
    }
}

/// Splits on whitespace outside brackets.
fn header_tokens(header: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    let mut depth = 0;
    for c in header.chars() {
        match c {
            '[' => {
                depth += 1;
                current.push(c);
            }
            ']' => {
                depth -= 1;
                current.push(c);
            }
            c if c.is_whitespace() && depth == 0 => {
                if !current.is_empty() {
                    tokens.push(std::mem::take(&mut current));
                }
            }
            c if c.is_whitespace() => {}
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    tokens
}

/// Splits a list `[a,b,[c,d]]` at top-level commas.
fn list_items(list: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in list.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&list[start..]);
    items
        .into_iter()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

fn parse_net(s: &str) -> Result<(IpAddr, u8), ParseError> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| bad(format!("`{s}` is not an address or CIDR")))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        Some(p) => p
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| bad(format!("bad prefix length in `{s}`")))?,
        None => max,
    };
    Ok((ip, prefix))
}

/// Walks an address or port spec: `!` negation, `[a,b]` lists and `$VAR`s
/// (looked up in `vars`, named `kind` in errors) down to single items, which
/// go to `leaf` with whether they are negated. `any` is the empty set.
fn walk(
    spec: &str,
    vars: &HashMap<String, String>,
    kind: &str,
    negate: bool,
    depth: u32,
    leaf: &mut dyn FnMut(&str, bool) -> Result<(), ParseError>,
) -> Result<(), ParseError> {
    if depth > 16 {
        return Err(bad("variables nest too deep (a cycle?)"));
    }
    let spec = spec.trim();
    if let Some(rest) = spec.strip_prefix('!') {
        return walk(rest, vars, kind, !negate, depth + 1, leaf);
    }
    if let Some(inner) = spec.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        for item in list_items(inner) {
            walk(item, vars, kind, negate, depth + 1, leaf)?;
        }
        return Ok(());
    }
    if let Some(name) = spec.strip_prefix('$') {
        let value = vars.get(name).ok_or_else(|| {
            bad(format!(
                "{kind} variable ${name} is not defined (add it to the vars file)"
            ))
        })?;
        return walk(value, vars, kind, negate, depth + 1, leaf);
    }
    if spec == "any" {
        return if negate {
            Err(bad("`!any` matches nothing"))
        } else {
            Ok(())
        };
    }
    leaf(spec, negate)
}

fn addresses(spec: &str, vars: &Vars, set: &mut AddrSet) -> Result<(), ParseError> {
    walk(
        spec,
        &vars.addresses,
        "address",
        false,
        0,
        &mut |item, negate| {
            let net = parse_net(item)?;
            if negate {
                set.exclude.push(net)
            } else {
                set.include.push(net)
            }
            Ok(())
        },
    )
}

fn ports(spec: &str, vars: &Vars, set: &mut PortSet) -> Result<(), ParseError> {
    walk(spec, &vars.ports, "port", false, 0, &mut |item, negate| {
        let num = |s: &str, default: u16| -> Result<u16, ParseError> {
            if s.is_empty() {
                Ok(default)
            } else {
                s.parse()
                    .map_err(|_| bad(format!("`{item}` is not a port or range")))
            }
        };
        let range = match item.split_once(':') {
            Some((lo, hi)) => (num(lo, 0)?, num(hi, u16::MAX)?),
            None => {
                let p = num(item, 0)?;
                (p, p)
            }
        };
        if range.0 > range.1 {
            return Err(bad(format!("port range `{item}` runs backwards")));
        }
        if negate {
            set.exclude.push(range)
        } else {
            set.include.push(range)
        }
        Ok(())
    })
}

/// Transport and application protocols of a Suricata protocol name.
fn protocol_of(name: &str) -> Option<(Option<u8>, Option<Vec<Protocol>>)> {
    use Protocol::*;
    let app = |l4: Option<u8>, protos: &[Protocol]| Some((l4, Some(protos.to_vec())));
    match name {
        "ip" | "any" => Some((None, None)),
        "tcp" | "tcp-pkt" | "tcp-stream" => Some((Some(6), None)),
        "udp" => Some((Some(17), None)),
        "icmp" => Some((Some(1), None)),
        "icmpv6" => Some((Some(58), None)),
        "http" | "http1" => app(Some(6), &[Http, HttpProxy]),
        "tls" | "ssl" => app(Some(6), &[Tls, Imaps, Pops, Smtps]),
        "dns" => app(None, &[Dns]),
        "quic" => app(Some(17), &[Quic]),
        "ssh" => app(Some(6), &[Ssh]),
        "smtp" => app(Some(6), &[Smtp]),
        "ftp" => app(Some(6), &[FtpControl]),
        "imap" => app(Some(6), &[Imap]),
        "pop3" => app(Some(6), &[Pop3]),
        "dhcp" => app(Some(17), &[Dhcp]),
        "ntp" => app(Some(17), &[Ntp]),
        "snmp" => app(Some(17), &[Snmp]),
        "sip" => app(None, &[Sip]),
        "smb" => app(Some(6), &[SmbV1, SmbV23]),
        "krb5" => app(None, &[Kerberos]),
        "rdp" => app(Some(6), &[Rdp]),
        "mqtt" => app(Some(6), &[Mqtt]),
        "pgsql" => app(Some(6), &[PostgreSql]),
        "ike" | "ikev2" => app(Some(17), &[IpSec]),
        "ldap" => app(None, &[Ldap]),
        "rtsp" => app(Some(6), &[Rtsp]),
        "mdns" => app(Some(17), &[Mdns]),
        "unknown" | "failed" => app(None, &[Unknown]),
        _ => None,
    }
}

/// Splits the option list at `;` outside quotes (honouring `\` escapes).
fn options(text: &str) -> Result<Vec<(String, Option<String>)>, ParseError> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for c in text.chars() {
        if escaped {
            current.push('\\');
            current.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            ';' if !quoted => {
                let opt = std::mem::take(&mut current);
                let opt = opt.trim();
                if !opt.is_empty() {
                    out.push(match opt.split_once(':') {
                        Some((k, v)) => (k.trim().to_string(), Some(v.trim().to_string())),
                        None => (opt.to_string(), None),
                    });
                }
            }
            c => current.push(c),
        }
    }
    if quoted {
        return Err(bad("unterminated quoted string in the options"));
    }
    if !current.trim().is_empty() {
        return Err(bad(format!(
            "option `{}` is missing its terminating `;`",
            current.trim()
        )));
    }
    Ok(out)
}

/// A quoted option value without its quotes, escapes resolved.
fn unquote(value: &str) -> Result<String, ParseError> {
    let inner = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .ok_or_else(|| bad(format!("expected a quoted string, got `{value}`")))?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(e @ ('"' | ';' | '\\' | ':')) => out.push(e),
                Some(other) => return Err(bad(format!("unknown escape `\\{other}`"))),
                None => return Err(bad("trailing backslash")),
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// `abc|0d 0a|def` to bytes.
fn content_bytes(spec: &str) -> Result<Vec<u8>, ParseError> {
    let mut out = Vec::new();
    let mut in_hex = false;
    let mut hex = String::new();
    for c in spec.chars() {
        match (c, in_hex) {
            ('|', false) => in_hex = true,
            ('|', true) => {
                let digits: String = hex.chars().filter(|c| !c.is_whitespace()).collect();
                if !digits.len().is_multiple_of(2) || !digits.chars().all(|c| c.is_ascii_hexdigit())
                {
                    return Err(bad(format!("bad hex bytes `|{hex}|` in content")));
                }
                for i in (0..digits.len()).step_by(2) {
                    out.push(
                        u8::from_str_radix(&digits[i..i + 2], 16)
                            .map_err(|_| bad(format!("bad hex bytes `|{hex}|` in content")))?,
                    );
                }
                hex.clear();
                in_hex = false;
            }
            (c, true) => hex.push(c),
            (c, false) => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    if in_hex {
        return Err(bad("unterminated `|` in content"));
    }
    if out.is_empty() {
        return Err(bad("empty content"));
    }
    Ok(out)
}

fn pcre(value: &str) -> Result<(regex::bytes::Regex, bool, bool), ParseError> {
    let (negated, value) = match value.strip_prefix('!') {
        Some(v) => (true, v),
        None => (false, value),
    };
    // Backslashes belong to the regex; only \" and \; are rule-level escapes.
    let inner = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .ok_or_else(|| bad(format!("expected a quoted pcre, got `{value}`")))?;
    let text = inner.replace("\\\"", "\"").replace("\\;", ";");
    let body = text
        .strip_prefix('/')
        .ok_or_else(|| bad("pcre must look like \"/regex/flags\""))?;
    let end = body
        .rfind('/')
        .ok_or_else(|| bad("pcre must look like \"/regex/flags\""))?;
    let (pattern, flags) = (&body[..end], &body[end + 1..]);
    let mut builder = regex::bytes::RegexBuilder::new(pattern);
    builder.unicode(false);
    let mut relative = false;
    for f in flags.chars() {
        match f {
            'i' => {
                builder.case_insensitive(true);
            }
            's' => {
                builder.dot_matches_new_line(true);
            }
            'm' => {
                builder.multi_line(true);
            }
            'x' => {
                builder.ignore_whitespace(true);
            }
            'R' => relative = true,
            other => {
                return Err(unsupported(
                    format!("pcre modifier {other}"),
                    format!("pcre modifier `{other}` is not supported (supported: i s m x R)"),
                ));
            }
        }
    }
    let regex = builder
        .build()
        .map_err(|e| bad(format!("pcre `{pattern}` is not valid in the regex crate's syntax (no backreferences or look-around): {e}")))?;
    Ok((regex, negated, relative))
}

/// Suricata's `flags:[+*!]FLAGS[,IGNORED]` (F S R P A U C E, 0 for none;
/// 1 and 2 are the old names of C and E).
fn tcp_flags(value: &str) -> Result<FlagsTest, ParseError> {
    let value = value.trim();
    let (set, ignored) = match value.split_once(',') {
        Some((set, ignored)) => (set.trim(), ignored.trim()),
        None => (value, ""),
    };
    let (mode, letters) = match set.chars().next() {
        Some('+') => (FlagsMode::All, &set[1..]),
        Some('*') => (FlagsMode::Any, &set[1..]),
        Some('!') => (FlagsMode::Not, &set[1..]),
        _ => (FlagsMode::Exact, set),
    };
    let bits = |letters: &str| -> Result<u8, ParseError> {
        letters.chars().try_fold(0u8, |acc, c| {
            let bit = match c.to_ascii_uppercase() {
                'F' => 0x01,
                'S' => 0x02,
                'R' => 0x04,
                'P' => 0x08,
                'A' => 0x10,
                'U' => 0x20,
                'E' | '2' => 0x40,
                'C' | '1' => 0x80,
                '0' => 0,
                other => {
                    return Err(bad(format!(
                        "flags: `{other}` is not a TCP flag (F S R P A U C E, 0)"
                    )));
                }
            };
            Ok(acc | bit)
        })
    };
    if letters.is_empty() {
        return Err(bad("flags needs at least one flag (F S R P A U C E, 0)"));
    }
    Ok(FlagsTest {
        bits: bits(letters)?,
        mode,
        ignore: bits(ignored)?,
    })
}

/// A size bound as Suricata writes it: `N`, `<N`, `>N`, `N<>M` (exclusive
/// bounds, as Suricata's), as an inclusive range.
fn size_range(key: &str, value: Option<&str>) -> Result<(usize, usize), ParseError> {
    let v = value.unwrap_or_default().trim();
    let n = |s: &str| {
        s.trim()
            .parse::<usize>()
            .map_err(|_| bad(format!("{key}: `{v}` is not N, <N, >N or N<>M")))
    };
    Ok(if let Some(max) = v.strip_prefix('<') {
        let max = n(max)?;
        if max == 0 {
            return Err(bad(format!("{key}: <0 can never match")));
        }
        (0, max - 1)
    } else if let Some(min) = v.strip_prefix('>') {
        (n(min)? + 1, usize::MAX)
    } else if let Some((lo, hi)) = v.split_once("<>") {
        let (lo, hi) = (n(lo)?, n(hi)?);
        if hi <= lo + 1 {
            return Err(bad(format!(
                "{key}: `{v}` leaves no size between its bounds"
            )));
        }
        (lo + 1, hi - 1)
    } else {
        let exact = n(v)?;
        (exact, exact)
    })
}

fn number<T: std::str::FromStr>(key: &str, value: Option<&str>) -> Result<T, ParseError> {
    value
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| bad(format!("`{key}` needs a number")))
}

fn last_content<'a>(
    matchers: &'a mut [(Buffer, Matcher)],
    key: &str,
) -> Result<&'a mut Content, ParseError> {
    match matchers.last_mut() {
        Some((_, Matcher::Content(c))) => Ok(c),
        _ => Err(bad(format!("`{key}` must follow a content"))),
    }
}

/// A position or length: a number, or a `byte_extract` variable defined
/// earlier in the rule. Negative numbers only where `signed`.
fn num_or_var(
    key: &str,
    value: Option<&str>,
    vars: &[String],
    signed: bool,
) -> Result<Num, ParseError> {
    let v = value.unwrap_or_default().trim();
    if let Ok(n) = v.parse::<i64>() {
        if n < 0 && !signed {
            return Err(bad(format!("{key}:{n} cannot be negative")));
        }
        return Ok(Num::Lit(n));
    }
    match vars.iter().position(|name| name == v) {
        Some(i) => Ok(Num::Var(i)),
        None if v.is_empty() => Err(bad(format!("`{key}` needs a number"))),
        None => Err(bad(format!(
            "{key}: `{v}` is neither a number nor a byte_extract variable defined before it"
        ))),
    }
}

/// The options `byte_test`, `byte_jump` and `byte_extract` share, read
/// from `parts`; what is left is returned for the caller.
fn byte_read<'a>(
    key: &str,
    nbytes: &str,
    offset: &str,
    parts: impl Iterator<Item = &'a str>,
    vars: &[String],
) -> Result<(ByteRead, Vec<&'a str>), ParseError> {
    let nbytes: usize = nbytes
        .trim()
        .parse()
        .map_err(|_| bad(format!("{key}: `{nbytes}` is not a number of bytes")))?;
    let mut read = ByteRead {
        nbytes,
        offset: num_or_var(key, Some(offset), vars, true)?,
        relative: false,
        little_endian: false,
        base: None,
        bitmask: None,
    };
    let mut rest = Vec::new();
    let mut string = false;
    for part in parts.map(str::trim) {
        let mut words = part.split_whitespace();
        match (words.next().unwrap_or(""), words.next()) {
            ("relative", None) => read.relative = true,
            ("big", None) => read.little_endian = false,
            ("little", None) => read.little_endian = true,
            ("string", None) => string = true,
            ("dec", None) if string => read.base = Some(10),
            ("hex", None) if string => read.base = Some(16),
            ("oct", None) if string => read.base = Some(8),
            ("bitmask", Some(mask)) => {
                let mask = mask.trim();
                let parsed = match mask.strip_prefix("0x").or_else(|| mask.strip_prefix("0X")) {
                    Some(hex) => u64::from_str_radix(hex, 16),
                    None => mask.parse(),
                };
                read.bitmask = Some(
                    parsed.map_err(|_| bad(format!("{key}: bitmask `{mask}` is not a number")))?,
                );
            }
            ("dce", None) => {
                return Err(unsupported(
                    format!("{key} dce"),
                    format!("{key}: `dce` (DCE/RPC byte order) is not supported"),
                ));
            }
            _ => rest.push(part),
        }
    }
    if string && read.base.is_none() {
        read.base = Some(10);
    }
    let most = if read.base.is_some() { 23 } else { 8 };
    if nbytes == 0 || nbytes > most {
        return Err(bad(format!(
            "{key}: {nbytes} bytes; 1 to {most} can be read{}",
            if read.base.is_some() {
                " as a string"
            } else {
                ""
            }
        )));
    }
    Ok((read, rest))
}

/// `byte_test:BYTES,[!]OP,VALUE,OFFSET[,relative][,big|little][,string[,dec|hex|oct]][,bitmask M]`
fn byte_test(value: &str, vars: &[String]) -> Result<Matcher, ParseError> {
    let mut parts = value.split(',');
    let (Some(nbytes), Some(op), Some(test), Some(offset)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad(format!(
            "byte_test:{value}: needs BYTES,OPERATOR,VALUE,OFFSET"
        )));
    };
    let (read, rest) = byte_read("byte_test", nbytes, offset, parts, vars)?;
    if let Some(extra) = rest.first() {
        return Err(bad(format!("byte_test: unknown option `{extra}`")));
    }
    let op = op.trim();
    let (negated, op) = match op.strip_prefix('!') {
        Some(rest) => (true, rest.trim()),
        None => (false, op),
    };
    let op = match op {
        "<" => ByteOp::Lt,
        ">" => ByteOp::Gt,
        "=" => ByteOp::Eq,
        "<=" => ByteOp::Le,
        ">=" => ByteOp::Ge,
        "&" => ByteOp::And,
        "^" => ByteOp::Xor,
        other => {
            return Err(bad(format!(
                "byte_test: `{other}` is not an operator (< > = <= >= & ^)"
            )));
        }
    };
    let test = test.trim();
    let value = match test.strip_prefix("0x").or_else(|| test.strip_prefix("0X")) {
        Some(hex) => Num::Lit(
            i64::from_str_radix(hex, 16)
                .map_err(|_| bad(format!("byte_test: `{test}` is not a number")))?,
        ),
        None => num_or_var("byte_test", Some(test), vars, false)?,
    };
    Ok(Matcher::ByteTest {
        read,
        op,
        negated,
        value,
    })
}

/// `byte_jump:BYTES,OFFSET[,relative][,multiplier N][,big|little][,string[,dec|hex|oct]][,align][,from_beginning|from_end][,post_offset N][,bitmask M]`
fn byte_jump(value: &str, vars: &[String]) -> Result<Matcher, ParseError> {
    let mut parts = value.split(',');
    let (Some(nbytes), Some(offset)) = (parts.next(), parts.next()) else {
        return Err(bad(format!("byte_jump:{value}: needs BYTES,OFFSET")));
    };
    let (read, rest) = byte_read("byte_jump", nbytes, offset, parts, vars)?;
    let mut multiplier = 1;
    let mut align = false;
    let mut from = JumpFrom::Here;
    let mut post_offset = 0;
    for part in rest {
        let mut words = part.split_whitespace();
        let n = |w: Option<&str>| -> Result<i64, ParseError> {
            w.and_then(|w| w.parse().ok())
                .ok_or_else(|| bad(format!("byte_jump: `{part}` needs a number")))
        };
        match words.next().unwrap_or("") {
            "multiplier" => {
                multiplier = u64::try_from(n(words.next())?)
                    .map_err(|_| bad("byte_jump: the multiplier cannot be negative"))?
            }
            "align" => align = true,
            "from_beginning" => from = JumpFrom::Beginning,
            "from_end" => from = JumpFrom::End,
            "post_offset" => post_offset = n(words.next())?,
            other => return Err(bad(format!("byte_jump: unknown option `{other}`"))),
        }
    }
    Ok(Matcher::ByteJump {
        read,
        multiplier,
        align,
        from,
        post_offset,
    })
}

/// `byte_extract:BYTES,OFFSET,NAME[,relative][,multiplier N][,big|little][,string[,dec|hex|oct]][,align N][,bitmask M]`
fn byte_extract(value: &str, vars: &[String]) -> Result<(Matcher, String), ParseError> {
    let mut parts = value.split(',');
    let (Some(nbytes), Some(offset), Some(name)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(bad(format!(
            "byte_extract:{value}: needs BYTES,OFFSET,NAME"
        )));
    };
    let name = name.trim().to_string();
    if name.is_empty() || name.parse::<i64>().is_ok() {
        return Err(bad(format!(
            "byte_extract: `{name}` is not a variable name"
        )));
    }
    if vars.contains(&name) {
        return Err(bad(format!("byte_extract: `{name}` is defined twice")));
    }
    if vars.len() >= MAX_BYTE_VARS {
        return Err(bad(format!(
            "byte_extract: at most {MAX_BYTE_VARS} variables per rule"
        )));
    }
    let (read, rest) = byte_read("byte_extract", nbytes, offset, parts, vars)?;
    let mut multiplier = 1;
    let mut align = 1;
    for part in rest {
        let mut words = part.split_whitespace();
        let key = words.next().unwrap_or("");
        let n: Option<u64> = words.next().and_then(|w| w.parse().ok());
        match (key, n) {
            ("multiplier", Some(m)) => multiplier = m,
            ("align", Some(a @ (2 | 4))) => align = a,
            ("align", _) => return Err(bad("byte_extract: align must be 2 or 4")),
            _ => return Err(bad(format!("byte_extract: unknown option `{part}`"))),
        }
    }
    Ok((
        Matcher::ByteExtract {
            read,
            var: vars.len(),
            multiplier,
            align,
        },
        name,
    ))
}

/// `N`, `!N`, `<N`, `<=N`, `>N`, `>=N`, `N-M`, `N<>M` (exclusive), up to `max`.
fn uint_test(key: &str, value: Option<&str>, max: u64) -> Result<UintTest, ParseError> {
    let v = value.unwrap_or_default().trim();
    let n = |s: &str| -> Result<u64, ParseError> {
        s.trim()
            .parse::<u64>()
            .ok()
            .filter(|n| *n <= max)
            .ok_or_else(|| {
                bad(format!(
                    "{key}: `{v}` is not N, !N, <N, <=N, >N, >=N, N-M or N<>M with numbers up to {max}"
                ))
            })
    };
    let empty = || bad(format!("{key}:{v} can never match"));
    let (lo, hi, negated) = if let Some(rest) = v.strip_prefix("<=") {
        (0, n(rest)?, false)
    } else if let Some(rest) = v.strip_prefix(">=") {
        (n(rest)?, max, false)
    } else if let Some(rest) = v.strip_prefix('<') {
        (0, n(rest)?.checked_sub(1).ok_or_else(empty)?, false)
    } else if let Some(rest) = v.strip_prefix('>') {
        let lo = n(rest)? + 1;
        if lo > max {
            return Err(empty());
        }
        (lo, max, false)
    } else if let Some(rest) = v.strip_prefix('!') {
        let x = n(rest)?;
        (x, x, true)
    } else if let Some((a, b)) = v.split_once("<>").or_else(|| v.split_once('-')) {
        let (a, b) = (n(a)?, n(b)?);
        if b <= a + 1 {
            return Err(empty());
        }
        (a + 1, b - 1, false)
    } else {
        let x = n(v)?;
        (x, x, false)
    };
    Ok(UintTest { lo, hi, negated })
}

/// `itype`/`icode`: an ICMP test, which makes the rule an ICMP rule.
fn icmp_field(key: &str, value: Option<&str>, rule: &mut Rule) -> Result<UintTest, ParseError> {
    if !(rule.l4_fits(1) || rule.l4_fits(58)) {
        return Err(bad(format!(
            "{key} is an ICMP keyword, on a rule that is not ICMP"
        )));
    }
    if rule.l4.is_none() {
        rule.l4 = Some(1);
        rule.l4_also = Some(58);
    }
    uint_test(key, value, u64::from(u8::MAX))
}

/// `flowbits:CMD,NAME` (`a|b`: any of them, for isset and isnotset);
/// None for `noalert`.
fn flowbit(value: &str) -> Result<Option<Flowbit>, ParseError> {
    let (cmd, names) = match value.split_once(',') {
        Some((cmd, names)) => (cmd.trim(), names.trim()),
        None => (value.trim(), ""),
    };
    let cmd = match cmd {
        "noalert" if names.is_empty() => return Ok(None),
        "set" => FlowbitCmd::Set,
        "unset" => FlowbitCmd::Unset,
        "toggle" => FlowbitCmd::Toggle,
        "isset" => FlowbitCmd::IsSet,
        "isnotset" => FlowbitCmd::IsNotSet,
        other => {
            return Err(bad(format!(
                "flowbits: `{other}` is not set, unset, toggle, isset, isnotset or noalert"
            )));
        }
    };
    if names.contains('&') {
        return Err(bad(format!(
            "flowbits: `{names}`: `&` is not an operator in Suricata (it would be part of one name that is never set): write one flowbits option per bit"
        )));
    }
    if names.contains('|') && !matches!(cmd, FlowbitCmd::IsSet | FlowbitCmd::IsNotSet) {
        return Err(bad("flowbits: `|` (any of) is only for isset and isnotset"));
    }
    let names: Vec<String> = names.split('|').map(|n| n.trim().to_string()).collect();
    if names
        .iter()
        .any(|n| n.is_empty() || n.contains(char::is_whitespace))
    {
        return Err(bad(format!("flowbits: `{value}` needs a bit name")));
    }
    Ok(Some(Flowbit {
        cmd,
        names,
        ids: Vec::new(),
    }))
}

/// `threshold: type limit|threshold|both, track by_src|by_dst|by_both|by_rule, count N, seconds T`
/// and `detection_filter: track ..., count N, seconds T`.
fn threshold(key: &str, value: &str) -> Result<Threshold, ParseError> {
    let mut kind = (key == "detection_filter").then_some(ThresholdKind::DetectionFilter);
    let (mut track, mut count, mut seconds) = (None, None, None);
    for part in value.split(',') {
        let mut words = part.split_whitespace();
        let (Some(name), Some(val), None) = (words.next(), words.next(), words.next()) else {
            return Err(bad(format!("{key}: `{}` is not NAME VALUE", part.trim())));
        };
        match name {
            "type" if key == "threshold" => {
                kind = Some(match val {
                    "limit" => ThresholdKind::Limit,
                    "threshold" => ThresholdKind::Threshold,
                    "both" => ThresholdKind::Both,
                    other => {
                        return Err(bad(format!(
                            "threshold: type `{other}` is not limit, threshold or both"
                        )));
                    }
                })
            }
            "track" => {
                track = Some(match val {
                    "by_src" => Track::Src,
                    "by_dst" => Track::Dst,
                    "by_both" => Track::Both,
                    "by_rule" => Track::Rule,
                    other => {
                        return Err(bad(format!(
                            "{key}: track `{other}` is not by_src, by_dst, by_both or by_rule"
                        )));
                    }
                })
            }
            "count" => count = val.parse::<u32>().ok().filter(|c| *c > 0),
            "seconds" => seconds = val.parse::<u32>().ok().filter(|s| *s > 0),
            other => return Err(bad(format!("{key}: unknown option `{other}`"))),
        }
    }
    match (kind, track, count, seconds) {
        (Some(kind), Some(track), Some(count), Some(seconds)) => Ok(Threshold {
            kind,
            track,
            count,
            seconds,
        }),
        _ => Err(bad(format!(
            "{key}: `{value}` needs {}track, count (above 0) and seconds (above 0)",
            if key == "threshold" { "type, " } else { "" }
        ))),
    }
}

/// Parses one rule (without file context).
pub(crate) fn rule(text: &str, vars: &Vars) -> Result<Rule, ParseError> {
    let open = text
        .find('(')
        .ok_or_else(|| bad("no option list `( ... )`"))?;
    let close = text
        .rfind(')')
        .filter(|c| *c > open)
        .ok_or_else(|| bad("the option list is not closed with `)`"))?;
    if !text[close + 1..].trim().is_empty() {
        return Err(bad("text after the closing `)`"));
    }
    let header = header_tokens(&text[..open]);
    let [action, proto, src, sport, dir, dst, dport] = header.as_slice() else {
        return Err(bad(format!(
            "the header needs 7 fields (action proto src sport -> dst dport), found {}",
            header.len()
        )));
    };
    let action = match action.as_str() {
        "alert" => Action::Alert,
        "drop" => Action::Drop,
        "pass" => Action::Pass,
        "bypass" => Action::Bypass,
        "reject" | "rejectsrc" => Action::Reject(crate::reject::Reject::Source),
        "rejectdst" => Action::Reject(crate::reject::Reject::Destination),
        "rejectboth" => Action::Reject(crate::reject::Reject::Both),
        other => {
            return Err(unsupported(
                format!("action {other}"),
                format!(
                    "action `{other}` is not supported (alert, drop, pass, bypass, reject, rejectsrc, rejectdst, rejectboth)"
                ),
            ));
        }
    };
    let (l4, app) = protocol_of(proto).ok_or_else(|| {
        unsupported(
            format!("protocol {proto}"),
            format!("protocol `{proto}` is not supported"),
        )
    })?;
    let bidirectional = match dir.as_str() {
        "->" => false,
        "<>" => true,
        other => return Err(bad(format!("direction must be -> or <>, got `{other}`"))),
    };
    let mut rule = Rule {
        sid: 0,
        gid: 1,
        rev: 1,
        msg: String::new(),
        class: None,
        priority: None,
        action,
        origin: Default::default(),
        l4,
        // Suricata's `icmp` is either ICMP
        l4_also: (proto == "icmp").then_some(58),
        app_proto: app,
        app_proto_not: None,
        src: AddrSet::default(),
        sport: PortSet::default(),
        dst: AddrSet::default(),
        dport: PortSet::default(),
        bidirectional,
        flow: FlowOpts::default(),
        dsize: None,
        flags: None,
        ttl: None,
        itype: None,
        icode: None,
        dns_opcode: None,
        tls_version: None,
        flowbits: Vec::new(),
        noalert: false,
        threshold: None,
        matchers: Vec::new(),
    };
    addresses(src, vars, &mut rule.src)?;
    addresses(dst, vars, &mut rule.dst)?;
    ports(sport, vars, &mut rule.sport)?;
    ports(dport, vars, &mut rule.dport)?;

    let mut buffer = Buffer::Payload;
    let mut sid = None;
    // `byte_extract` variables, in order of definition.
    let mut byte_vars: Vec<String> = Vec::new();
    for (key, value) in options(&text[open + 1..close])? {
        let v = value.as_deref();
        match key.as_str() {
            "msg" => rule.msg = unquote(v.unwrap_or_default())?,
            "sid" => sid = Some(number::<u32>("sid", v)?),
            "rev" => rule.rev = number("rev", v)?,
            "gid" => rule.gid = number("gid", v)?,
            "priority" => rule.priority = Some(number::<u8>("priority", v)?),
            "classtype" => {
                let name = v.unwrap_or_default().trim();
                rule.class = Some(super::classtype(name).ok_or_else(|| {
                    bad(format!(
                        "unknown classtype `{name}` (the classtypes of Suricata's classification.config are known)"
                    ))
                })?);
            }
            "reference" | "metadata" | "target" => {}
            "fast_pattern" => {
                let c = last_content(&mut rule.matchers, "fast_pattern")?;
                if c.negated {
                    return Err(bad("fast_pattern cannot be on a negated content"));
                }
                c.fast_pattern = Some(match v.map(str::trim) {
                    None | Some("only") => (0, c.bytes.len()),
                    Some(chop) => {
                        let (from, len) = chop.split_once(',').ok_or_else(|| {
                            bad(format!(
                                "fast_pattern: `{chop}` is not `only` or OFFSET,LENGTH"
                            ))
                        })?;
                        let n = |t: &str| {
                            t.trim().parse::<usize>().map_err(|_| {
                                bad(format!("fast_pattern: `{chop}` is not OFFSET,LENGTH"))
                            })
                        };
                        let (from, len) = (n(from)?, n(len)?);
                        if len == 0 || from + len > c.bytes.len() {
                            return Err(bad(format!(
                                "fast_pattern:{chop} reaches past the content's {} bytes",
                                c.bytes.len()
                            )));
                        }
                        (from, len)
                    }
                });
            }
            "content" => {
                let raw = v.ok_or_else(|| bad("content needs a value"))?;
                let (negated, raw) = match raw.strip_prefix('!') {
                    Some(r) => (true, r.trim()),
                    None => (false, raw),
                };
                let bytes = content_bytes(&unquote(raw)?)?;
                rule.matchers.push((
                    buffer,
                    Matcher::Content(Content {
                        bytes,
                        nocase: false,
                        negated,
                        offset: None,
                        depth: None,
                        distance: None,
                        within: None,
                        endswith: false,
                        fast_pattern: None,
                    }),
                ));
            }
            "nocase" => last_content(&mut rule.matchers, "nocase")?.nocase = true,
            "startswith" => {
                let c = last_content(&mut rule.matchers, "startswith")?;
                if c.offset.is_some()
                    || c.depth.is_some()
                    || c.distance.is_some()
                    || c.within.is_some()
                {
                    return Err(bad(
                        "startswith cannot be combined with offset, depth, distance or within",
                    ));
                }
                c.offset = Some(Num::Lit(0));
                c.depth = Some(Num::Lit(c.bytes.len() as i64));
            }
            "endswith" => last_content(&mut rule.matchers, "endswith")?.endswith = true,
            "bsize" => {
                let (min, max) = size_range("bsize", v)?;
                rule.matchers.push((buffer, Matcher::Bsize { min, max }));
            }
            "dsize" => rule.dsize = Some(size_range("dsize", v)?),
            "flags" => {
                if rule.l4.is_some_and(|l4| l4 != 6) {
                    return Err(bad("flags is a TCP keyword, on a rule that is not TCP"));
                }
                rule.flags = Some(tcp_flags(v.unwrap_or_default())?);
                rule.l4 = Some(6);
            }
            "ip_proto" => {
                let value = v.unwrap_or_default().trim();
                let number = match value {
                    "tcp" => 6,
                    "udp" => 17,
                    "icmp" => 1,
                    "ipv6-icmp" | "icmpv6" => 58,
                    "igmp" => 2,
                    "gre" => 47,
                    "esp" => 50,
                    "ah" => 51,
                    n => n.parse::<u8>().map_err(|_| {
                        bad(format!(
                            "ip_proto: `{value}` is not a protocol number or name"
                        ))
                    })?,
                };
                if !rule.l4_fits(number) {
                    return Err(bad(format!(
                        "ip_proto:{value} contradicts the rule's protocol `{proto}`"
                    )));
                }
                rule.l4 = Some(number);
                rule.l4_also = None;
            }
            "depth" => {
                let n = num_or_var("depth", v, &byte_vars, false)?;
                last_content(&mut rule.matchers, "depth")?.depth = Some(n)
            }
            "offset" => {
                let n = num_or_var("offset", v, &byte_vars, false)?;
                last_content(&mut rule.matchers, "offset")?.offset = Some(n)
            }
            "distance" => {
                let n = num_or_var("distance", v, &byte_vars, true)?;
                last_content(&mut rule.matchers, "distance")?.distance = Some(n)
            }
            "within" => {
                let n = num_or_var("within", v, &byte_vars, false)?;
                last_content(&mut rule.matchers, "within")?.within = Some(n)
            }
            "isdataat" => {
                let value = v.ok_or_else(|| bad("isdataat needs a value"))?;
                let (negated, value) = match value.trim().strip_prefix('!') {
                    Some(rest) => (true, rest),
                    None => (false, value.trim()),
                };
                let mut parts = value.split(',').map(str::trim);
                let at = num_or_var("isdataat", parts.next(), &byte_vars, false)?;
                let mut relative = false;
                for part in parts {
                    match part {
                        "relative" => relative = true,
                        "rawbytes" => {}
                        other => return Err(bad(format!("isdataat: unknown option `{other}`"))),
                    }
                }
                rule.matchers.push((
                    buffer,
                    Matcher::IsDataAt {
                        at,
                        relative,
                        negated,
                    },
                ));
            }
            "byte_test" => {
                let m = byte_test(v.unwrap_or_default(), &byte_vars)?;
                rule.matchers.push((buffer, m));
            }
            "byte_jump" => {
                let m = byte_jump(v.unwrap_or_default(), &byte_vars)?;
                rule.matchers.push((buffer, m));
            }
            "byte_extract" => {
                let (m, name) = byte_extract(v.unwrap_or_default(), &byte_vars)?;
                byte_vars.push(name);
                rule.matchers.push((buffer, m));
            }
            "urilen" => {
                let value = v.unwrap_or_default();
                let (range, target) = match value.split_once(',') {
                    Some((range, "raw")) => (range, Buffer::HttpUriRaw),
                    Some((range, "norm")) => (range, Buffer::HttpUri),
                    Some((_, other)) => {
                        return Err(bad(format!("urilen: `{other}` is not raw or norm")));
                    }
                    // as Suricata: the normalised URI unless `raw`
                    None => (value, Buffer::HttpUri),
                };
                let (min, max) = size_range("urilen", Some(range))?;
                rule.matchers.push((target, Matcher::Bsize { min, max }));
            }
            "ttl" => rule.ttl = Some(uint_test("ttl", v, u64::from(u8::MAX))?),
            "itype" => rule.itype = Some(icmp_field("itype", v, &mut rule)?),
            "icode" => rule.icode = Some(icmp_field("icode", v, &mut rule)?),
            "dns.opcode" => rule.dns_opcode = Some(uint_test("dns.opcode", v, 15)?),
            "flowbits" => match flowbit(v.unwrap_or_default())? {
                None => rule.noalert = true,
                Some(fb) => rule.flowbits.push(fb),
            },
            "noalert" => rule.noalert = true,
            "threshold" => rule.threshold = Some(threshold("threshold", v.unwrap_or_default())?),
            "detection_filter" => {
                rule.threshold = Some(threshold("detection_filter", v.unwrap_or_default())?)
            }
            "pcre" => {
                let (regex, negated, relative) = pcre(v.ok_or_else(|| bad("pcre needs a value"))?)?;
                rule.matchers.push((
                    buffer,
                    Matcher::Pcre {
                        regex,
                        negated,
                        relative,
                    },
                ));
            }
            "flow" => {
                for part in v.unwrap_or_default().split(',').map(str::trim) {
                    match part {
                        "to_server" | "from_client" => rule.flow.to_server = Some(true),
                        "to_client" | "from_server" => rule.flow.to_server = Some(false),
                        "established" => rule.flow.established = Some(true),
                        "not_established" => rule.flow.established = Some(false),
                        "stateless" => {}
                        other => {
                            return Err(unsupported(
                                format!("flow option {other}"),
                                format!("flow option `{other}` is not supported"),
                            ));
                        }
                    }
                }
            }
            "app-layer-protocol" => {
                let name = v.unwrap_or_default().trim();
                let (negated, name) = match name.strip_prefix('!') {
                    Some(n) => (true, n),
                    None => (false, name),
                };
                let protos = protocol_of(name)
                    .and_then(|(_, app)| app)
                    .ok_or_else(|| bad(format!("unknown app-layer-protocol `{name}`")))?;
                if negated {
                    rule.app_proto_not = Some(protos);
                } else {
                    rule.app_proto = Some(match rule.app_proto.take() {
                        // the header names a protocol too: both must hold
                        Some(header) => {
                            let both: Vec<Protocol> =
                                header.into_iter().filter(|p| protos.contains(p)).collect();
                            if both.is_empty() {
                                return Err(bad(format!(
                                    "app-layer-protocol:{name} contradicts the rule's protocol `{proto}`: the rule could never match"
                                )));
                            }
                            both
                        }
                        None => protos,
                    });
                }
            }
            "http.host" | "http_host" => {
                buffer = sticky_or_modifier(&key, Buffer::HttpHost, &mut rule.matchers, buffer)?
            }
            "http.uri" | "http_uri" => {
                buffer = sticky_or_modifier(&key, Buffer::HttpUri, &mut rule.matchers, buffer)?
            }
            "http.uri.raw" | "http_raw_uri" => {
                buffer = sticky_or_modifier(&key, Buffer::HttpUriRaw, &mut rule.matchers, buffer)?
            }
            "http.method" | "http_method" => {
                buffer = sticky_or_modifier(&key, Buffer::HttpMethod, &mut rule.matchers, buffer)?
            }
            "http.user_agent" | "http_user_agent" => {
                buffer =
                    sticky_or_modifier(&key, Buffer::HttpUserAgent, &mut rule.matchers, buffer)?
            }
            key @ ("http.header" | "http_header" | "http.header.raw" | "http_raw_header"
            | "http.cookie" | "http_cookie" | "http.referer" | "http.content_type"
            | "http.content_len" | "http.request_line" | "http.response_line"
            | "http.protocol" | "http.stat_code" | "http_stat_code" | "http.stat_msg"
            | "http_stat_msg" | "http.server" | "http.location" | "http.host.raw"
            | "http_raw_host" | "http.accept" | "http.accept_enc" | "http.accept_lang"
            | "http.connection" | "http.request_body" | "http_client_body"
            | "http.response_body" | "http_server_body" | "file.data" | "file_data") => {
                let target = match key {
                    "http.header" | "http_header" => Buffer::HttpHeader,
                    "http.header.raw" | "http_raw_header" => Buffer::HttpHeaderRaw,
                    "http.cookie" | "http_cookie" => Buffer::HttpCookie,
                    "http.referer" => Buffer::HttpReferer,
                    "http.content_type" => Buffer::HttpContentType,
                    "http.content_len" => Buffer::HttpContentLen,
                    "http.request_line" => Buffer::HttpRequestLine,
                    "http.response_line" => Buffer::HttpResponseLine,
                    "http.protocol" => Buffer::HttpProtocol,
                    "http.stat_code" | "http_stat_code" => Buffer::HttpStatCode,
                    "http.stat_msg" | "http_stat_msg" => Buffer::HttpStatMsg,
                    "http.server" => Buffer::HttpServer,
                    "http.location" => Buffer::HttpLocation,
                    "http.host.raw" | "http_raw_host" => Buffer::HttpHostRaw,
                    "http.accept" => Buffer::HttpAccept,
                    "http.accept_enc" => Buffer::HttpAcceptEnc,
                    "http.accept_lang" => Buffer::HttpAcceptLang,
                    "http.connection" => Buffer::HttpConnection,
                    "http.request_body" | "http_client_body" => Buffer::HttpRequestBody,
                    "http.response_body" | "http_server_body" => Buffer::HttpResponseBody,
                    _ => Buffer::FileData,
                };
                buffer = if key == "file_data" {
                    // file_data was always sticky
                    target
                } else {
                    sticky_or_modifier(key, target, &mut rule.matchers, buffer)?
                };
            }
            "tls.sni" | "tls_sni" => {
                buffer = sticky_or_modifier(&key, Buffer::TlsSni, &mut rule.matchers, buffer)?
            }
            "quic.sni" => buffer = Buffer::QuicSni,
            "ja4.hash" => buffer = Buffer::Ja4,
            "ja3.hash" | "ja3_hash" => {
                buffer = sticky_or_modifier(&key, Buffer::Ja3Hash, &mut rule.matchers, buffer)?
            }
            "ja3.string" => buffer = Buffer::Ja3String,
            "ja3s.hash" => buffer = Buffer::Ja3sHash,
            "ja3s.string" => buffer = Buffer::Ja3sString,
            "tls.cert_subject" | "tls_cert_subject" => {
                buffer =
                    sticky_or_modifier(&key, Buffer::TlsCertSubject, &mut rule.matchers, buffer)?
            }
            "tls.cert_issuer" | "tls_cert_issuer" => {
                buffer =
                    sticky_or_modifier(&key, Buffer::TlsCertIssuer, &mut rule.matchers, buffer)?
            }
            "ssh.proto" | "ssh_proto" => buffer = Buffer::SshProto,
            "ssh.software" | "ssh_software" => buffer = Buffer::SshSoftware,
            "tls.version" => {
                let value = v.unwrap_or_default().trim();
                rule.tls_version = Some(match value {
                    "1.0" => 0x0301,
                    "1.1" => 0x0302,
                    "1.2" => 0x0303,
                    "1.3" => 0x0304,
                    "3.0" | "ssl3" => 0x0300,
                    hex => hex
                        .strip_prefix("0x")
                        .and_then(|h| u16::from_str_radix(h, 16).ok())
                        .ok_or_else(|| {
                            bad(format!(
                                "tls.version: `{value}` is not 1.0, 1.1, 1.2, 1.3, 3.0 or 0xNNNN"
                            ))
                        })?,
                });
            }
            "dns.query" | "dns_query" => {
                buffer = sticky_or_modifier(&key, Buffer::DnsQuery, &mut rule.matchers, buffer)?
            }
            "pkt_data" => buffer = Buffer::Payload,
            other => {
                return Err(unsupported(
                    format!("keyword {other}"),
                    format!("keyword `{other}` is not supported"),
                ));
            }
        }
    }
    rule.sid = sid.ok_or_else(|| bad("the rule has no sid"))?;
    check_contents(&rule.matchers)?;
    check_directions(&rule)?;
    Ok(rule)
}

/// What Suricata refuses in a content, refused the same way: a `depth` or
/// `within` shorter than the pattern (it can never match), and upper-case
/// letters in an `http.host` pattern without `nocase` (the buffer is
/// lower-case: it can never match either).
fn check_contents(matchers: &[(Buffer, Matcher)]) -> Result<(), ParseError> {
    for (buffer, matcher) in matchers {
        let Matcher::Content(c) = matcher else {
            continue;
        };
        let shown = String::from_utf8_lossy(&c.bytes);
        for (what, limit) in [("depth", c.depth), ("within", c.within)] {
            if let Some(limit) = limit.and_then(Num::literal)
                && limit < c.bytes.len() as i64
            {
                return Err(bad(format!(
                    "{what}:{limit} is shorter than content \"{shown}\" ({} bytes): it can never match",
                    c.bytes.len()
                )));
            }
        }
        if *buffer == Buffer::HttpHost && !c.nocase && c.bytes.iter().any(u8::is_ascii_uppercase) {
            return Err(bad(format!(
                "http.host is normalised to lower case, so content \"{shown}\" with upper-case letters can never match: write it in lower case"
            )));
        }
    }
    Ok(())
}

/// What Suricata refuses as "mixes keywords with conflicting directions":
/// buffers of the request with buffers of the response, or either with a
/// `flow` direction that contradicts it.
fn check_directions(rule: &Rule) -> Result<(), ParseError> {
    let mut seen: [Option<Buffer>; 2] = [None, None];
    for (buffer, _) in &rule.matchers {
        if let Some(to_server) = buffer.to_server() {
            seen[usize::from(to_server)].get_or_insert(*buffer);
        }
    }
    let name = |b: Buffer| format!("{b:?}");
    if rule.flow.to_server.is_none()
        && rule
            .matchers
            .iter()
            .any(|(b, _)| *b == Buffer::HttpHeaderRaw)
    {
        return Err(bad(
            "http.header.raw needs a direction: flow:to_server for request headers or flow:to_client for response headers",
        ));
    }
    if let [Some(response), Some(request)] = seen {
        return Err(bad(format!(
            "the rule mixes keywords with conflicting directions: {} reads the response, {} the request",
            name(response),
            name(request)
        )));
    }
    if let Some(to_server) = rule.flow.to_server
        && let Some(buffer) = seen[usize::from(!to_server)]
    {
        return Err(bad(format!(
            "the rule mixes keywords with conflicting directions: flow:{} with {}, which reads the {}",
            if to_server { "to_server" } else { "to_client" },
            name(buffer),
            if to_server { "response" } else { "request" }
        )));
    }
    Ok(())
}

/// `http.host` (sticky: applies to what follows) or the legacy `http_host`
/// modifier (applies to the content before it).
fn sticky_or_modifier(
    key: &str,
    target: Buffer,
    matchers: &mut [(Buffer, Matcher)],
    current: Buffer,
) -> Result<Buffer, ParseError> {
    if key.contains('.') {
        return Ok(target);
    }
    match matchers.last_mut() {
        Some((buffer, Matcher::Content(_))) => {
            *buffer = target;
            Ok(current)
        }
        _ => Err(bad(format!(
            "`{key}` must follow a content (or use the sticky buffer `{}`)",
            key.replacen('_', ".", 1)
        ))),
    }
}
