use std::path::Path;

use super::*;
use crate::classify::{AppInfo, Confidence};

fn set(text: &str) -> RuleSet {
    RuleSet::parse(text, Path::new("test.rules"), &Vars::default(), false)
        .unwrap_or_else(|e| panic!("{e:?}"))
}

fn errors(text: &str) -> Vec<RuleError> {
    RuleSet::parse(text, Path::new("bad.rules"), &Vars::default(), false).expect_err("must fail")
}

fn packet<'a>(payload: &'a [u8], app: Option<&'a Classification>) -> PacketView<'a> {
    PacketView {
        src: "198.18.0.1".parse().unwrap(),
        dst: "198.18.0.2".parse().unwrap(),
        sport: 40000,
        dport: 80,
        payload,
        app,
        dsize: payload.len(),
        tcp_flags: Some(0x18),
        ..PacketView::default()
    }
}

fn sids(set: &RuleSet, p: &PacketView<'_>) -> Vec<u32> {
    set.matches(p, &mut FlowBits::default())
        .hits
        .into_iter()
        .map(|h| h.sid)
        .collect()
}

#[test]
fn content_hex_nocase_and_positions() {
    let s = set(concat!(
        "alert tcp any any -> any 80 (msg:\"hex\"; content:\"GET |2f|admin\"; sid:1;)\n",
        "alert tcp any any -> any 80 (content:\"get\"; nocase; depth:3; sid:2;)\n",
        "alert tcp any any -> any 80 (content:\"admin\"; offset:10; sid:3;)\n",
        "alert tcp any any -> any 80 (content:\"GET\"; content:\"HTTP\"; distance:0; within:20; sid:4;)\n",
        "alert tcp any any -> any 80 (content:\"GET\"; content:!\"evil\"; sid:5;)\n",
    ));
    assert_eq!(
        sids(&s, &packet(b"GET /admin HTTP/1.1\r\n", None)),
        vec![1, 2, 4, 5]
    );
    assert_eq!(
        sids(&s, &packet(b"xGET /evil ...", None)),
        Vec::<u32>::new()
    );
}

#[test]
fn header_addresses_ports_lists_negation_and_bidirection() {
    let s = set(concat!(
        "alert tcp 198.18.0.0/24 any -> ![198.18.0.3,198.18.0.4] [80,443] (content:\"x\"; sid:1;)\n",
        "alert tcp any any -> any !80 (content:\"x\"; sid:2;)\n",
        "alert tcp 198.18.0.2 80 <> any any (content:\"x\"; sid:3;)\n",
        "alert udp any any -> any any (content:\"x\"; sid:4;)\n",
        "alert tcp any 1024: -> any :1023 (content:\"x\"; sid:5;)\n",
    ));
    assert_eq!(sids(&s, &packet(b"x", None)), vec![1, 3, 5]);
}

#[test]
fn variables_from_a_vars_file() {
    let vars = Vars::parse(
        "[address-groups]\nHOME_NET = \"[198.18.0.0/15]\"\nEXTERNAL_NET = \"!$HOME_NET\"\n[port-groups]\nWEB = \"[80,8080]\"\n",
        Path::new("vars.toml"),
    )
    .unwrap();
    let s = RuleSet::parse(
        "alert tcp $HOME_NET any -> $HOME_NET $WEB (content:\"x\"; sid:1;)\nalert tcp $EXTERNAL_NET any -> any any (content:\"x\"; sid:2;)\n",
        Path::new("r"),
        &vars,
        false,
    )
    .unwrap();
    assert_eq!(sids(&s, &packet(b"x", None)), vec![1]);
    let missing = RuleSet::parse(
        "alert tcp $NOPE any -> any any (sid:1;)",
        Path::new("r"),
        &vars,
        false,
    )
    .unwrap_err();
    assert!(missing[0].message.contains("$NOPE"), "{:?}", missing);
}

#[test]
fn sticky_buffers_flow_and_app_layer_protocol() {
    let app = Classification {
        protocol: Protocol::Http,
        confidence: Confidence::Dpi,
        host: Some("evil.test".into()),
        dpi_packets: 1,
        info: AppInfo {
            http_method: Some("POST".into()),
            http_uri: Some("/upload".into()),
            http_user_agent: Some("curl/8.0".into()),
            ..AppInfo::default()
        },
    };
    let s = set(concat!(
        "drop http any any -> any any (msg:\"host\"; http.host; content:\"evil.test\"; sid:10;)\n",
        "alert tcp any any -> any any (http.method; content:\"POST\"; http.uri; content:\"/upl\"; sid:11;)\n",
        "alert tcp any any -> any any (http.user_agent; pcre:\"/^curl\\/[0-9]/\"; sid:12;)\n",
        "alert tcp any any -> any any (flow:to_client; content:\"x\"; sid:13;)\n",
        "alert tcp any any -> any any (app-layer-protocol:tls; sid:14;)\n",
        "alert tcp any any -> any any (app-layer-protocol:!tls; flow:established,to_server; sid:15;)\n",
        "alert tcp any any -> any any (tls.sni; content:\"evil\"; sid:16;)\n",
        "alert tcp any any -> any any (content:\"POST\"; http_method; sid:17;)\n",
    ));
    let hits = s
        .matches(&packet(b"x", Some(&app)), &mut FlowBits::default())
        .hits;
    assert_eq!(
        hits.iter().map(|h| h.sid).collect::<Vec<_>>(),
        vec![10, 11, 12, 15, 17]
    );
    assert_eq!(hits[0].action, Action::Drop);
    // Without a classification, the HTTP buffers do not exist, and a
    // negated app-layer-protocol does not match the unknown state.
    assert!(sids(&s, &packet(b"x", None)).is_empty());
}

#[test]
fn errors_name_line_and_keyword() {
    let e = errors(
        "\n# comment\nalert tcp any any -> any any (content:\"x\"; base64_decode; sid:1;)\n",
    );
    assert_eq!(e[0].line, 3);
    assert!(e[0].message.contains("base64_decode"), "{}", e[0]);
    assert_eq!(
        e[0].to_string(),
        "bad.rules:3: keyword `base64_decode` is not supported"
    );
    let e = errors("alert tcp any any -> any any (pcre:\"/(a)\\1/\"; sid:2;)\n");
    assert!(e[0].message.contains("regex crate"), "{}", e[0]);
    let e = errors(
        "alert tcp any any -> any any (content:\"x\"; sid:3;)\nalert tcp any any -> any any (content:\"y\"; sid:3;)\n",
    );
    assert!(e[0].message.contains("duplicate sid 3"));
    assert!(
        !errors("sdrop tcp any any -> any any (sid:4;)")[0]
            .message
            .is_empty()
    );
    assert!(
        errors("alert tcp any any -> any any (content:\"x\"; sid:5)")[0]
            .message
            .contains("terminating")
    );
    assert!(
        errors("alert tcp any any -> any any (content:\"|4|\"; sid:6;)")[0]
            .message
            .contains("hex")
    );
}

#[test]
fn lenient_mode_skips_unsupported_rules_with_a_warning() {
    let text = "alert tcp any any -> any any (content:\"x\"; base64_decode; sid:1;)\nalert tcp any any -> any any (content:\"x\"; sid:2;)\n";
    let s = RuleSet::parse(text, Path::new("l.rules"), &Vars::default(), true).unwrap();
    assert_eq!(s.len(), 1);
    assert_eq!(s.warnings.len(), 1);
    assert_eq!(s.warnings[0].line, 1);
    // the summary groups skipped rules by what they needed
    let text = concat!(
        "alert tcp any any -> any any (content:\"x\"; base64_decode; sid:1;)\n",
        "alert modbus any any -> any any (sid:2;)\n",
        "alert tcp any any -> any any (base64_data; content:\"x\"; base64_decode; sid:3;)\n",
    );
    let s = RuleSet::parse(text, Path::new("l.rules"), &Vars::default(), true).unwrap();
    assert!(s.is_empty());
    assert_eq!(
        s.skipped,
        [
            ("keyword base64_data".to_string(), vec![3]),
            ("keyword base64_decode".to_string(), vec![1]),
            ("protocol modbus".to_string(), vec![2]),
        ]
    );
    // Malformed rules are errors even when lenient.
    assert!(
        RuleSet::parse(
            "alert tcp any any -> (sid:1;)",
            Path::new("l"),
            &Vars::default(),
            true
        )
        .is_err()
    );
}

#[test]
fn ten_thousand_rules_only_run_candidates() {
    let mut text = String::new();
    for i in 0..10_000 {
        text.push_str(&format!(
            "alert tcp any any -> any any (content:\"pattern-{i:05}\"; sid:{};)\n",
            i + 1
        ));
    }
    let s = set(&text);
    assert_eq!(
        sids(&s, &packet(b"... pattern-04242 ...", None)),
        vec![4243]
    );
    assert!(s.unfiltered.is_empty());
}

/// Five relative contents against 150 `../` (with the last content, `END`,
/// at the start, where no chain can reach it, so the prefilter lets the
/// rule through): every `../` is an occurrence of each, so trying them all
/// is ~150^5 steps. The matcher stops at the
/// inspection limit (reporting the rule), quickly, and a rule that does fit
/// in the budget still matches.
#[test]
fn relative_content_chains_stop_at_the_inspection_limit() {
    let s = set(concat!(
        "drop tcp any any -> any any (content:\"../\"; content:\"../\"; distance:0; content:\"../\"; distance:0; ",
        "content:\"../\"; distance:0; content:\"../\"; distance:0; content:\"END\"; distance:0; within:3; sid:1;)\n",
        "alert tcp any any -> any any (content:\"../\"; content:\"../\"; distance:0; within:3; sid:2;)\n",
    ));
    let payload = format!("END{}", "../".repeat(150));
    let started = std::time::Instant::now();
    let m = s.matches(&packet(payload.as_bytes(), None), &mut FlowBits::default());
    let took = started.elapsed();
    assert_eq!(m.hits.iter().map(|h| h.sid).collect::<Vec<_>>(), vec![2]);
    assert_eq!(
        m.over_limit.iter().map(|h| h.sid).collect::<Vec<_>>(),
        vec![1]
    );
    assert_eq!(m.most_steps, INSPECTION_LIMIT);
    assert!(
        took < std::time::Duration::from_millis(200),
        "took {took:?}"
    );
    // the same chain on a short input is decided within the budget
    let m = s.matches(
        &packet(b"END../../../../../END", None),
        &mut FlowBits::default(),
    );
    assert_eq!(m.hits.iter().map(|h| h.sid).collect::<Vec<_>>(), vec![1, 2]);
    assert!(m.over_limit.is_empty() && m.most_steps < INSPECTION_LIMIT);
}

/// In a window of a stream, `offset`/`depth` count from the stream's start.
#[test]
fn positions_count_from_the_stream_start() {
    let s = set(concat!(
        "alert tcp any any -> any 80 (content:\"GET\"; depth:3; sid:1;)\n",
        "alert tcp any any -> any 80 (content:\"evil\"; offset:100; depth:10; sid:2;)\n",
        "alert tcp any any -> any 80 (content:\"evil\"; sid:3;)\n",
    ));
    let mut p = packet(b"GET evil", None);
    assert_eq!(sids(&s, &p), [1, 3]);
    // the same bytes 100 bytes into the stream
    p.payload_base = 100;
    assert_eq!(sids(&s, &p), [2, 3], "evil at stream offset 104");
    p.payload = b"GETevil";
    p.payload_base = 97;
    assert_eq!(sids(&s, &p), [2, 3]);
    p.payload_base = 200;
    assert_eq!(sids(&s, &p), [3]);
}

#[test]
fn could_match_knows_which_buffers_a_flow_can_still_bring() {
    let s = set(concat!(
        "drop http any any -> any any (http.host; content:\"evil\"; sid:1;)\n",
        "drop tls any any -> any any (tls.sni; content:\"evil\"; sid:2;)\n",
        "alert udp any any -> any 53 (dns.query; content:\"evil\"; sid:3;)\n",
    ));
    let facts = |l4, port, protocol| FlowFacts {
        l4,
        client: "198.18.0.1:40000".parse().unwrap(),
        server: std::net::SocketAddr::new("198.18.0.2".parse().unwrap(), port),
        protocol,
        established: true,
    };
    assert!(s.could_match(&facts(6, 80, Protocol::Http)));
    assert!(
        !s.could_match(&facts(6, 443, Protocol::Tls)),
        "the SNI came with the ClientHello"
    );
    assert!(!s.could_match(&facts(6, 22, Protocol::Ssh)));
    assert!(s.could_match(&facts(17, 53, Protocol::Dns)));
    assert!(
        !s.could_match(&facts(17, 5353, Protocol::Mdns)),
        "port 53 only"
    );
    let raw = set("alert tcp any any -> any 8000:9000 (content:\"x\"; sid:4;)\n");
    assert!(raw.could_match(&facts(6, 8080, Protocol::Unknown)));
    assert!(!raw.could_match(&facts(6, 80, Protocol::Http)));
    assert!(!raw.could_match(&facts(17, 8080, Protocol::Unknown)));
}

/// Suricata: a negated app-layer-protocol never matches while the flow's
/// protocol is unknown; the header's protocol and app-layer-protocol must
/// both hold, and a rule where they cannot is refused.
#[test]
fn app_layer_protocol_as_suricata_reads_it() {
    let s = set("alert tcp any any -> any any (app-layer-protocol:!tls; sid:1;)\n");
    let unknown = packet(b"x", None);
    assert!(sids(&s, &unknown).is_empty(), "unknown is not 'not TLS'");
    let http = Classification {
        protocol: Protocol::Http,
        ..Classification::default()
    };
    assert_eq!(sids(&s, &packet(b"x", Some(&http))), [1]);
    let tls = Classification {
        protocol: Protocol::Tls,
        ..Classification::default()
    };
    assert!(sids(&s, &packet(b"x", Some(&tls))).is_empty());
    let e = errors("alert http any any -> any any (app-layer-protocol:tls; sid:2;)\n");
    assert!(e[0].message.contains("contradicts"), "{e:?}");
    let s = set("alert tcp any any -> any any (app-layer-protocol:tls; sid:3;)\n");
    assert_eq!(sids(&s, &packet(b"x", Some(&tls))), [3]);
    assert!(sids(&s, &packet(b"x", Some(&http))).is_empty());
}

/// `tls.sni` is TLS's SNI; a QUIC flow's is `quic.sni`.
#[test]
fn tls_sni_and_quic_sni() {
    let s = set(concat!(
        "alert ip any any -> any any (tls.sni; content:\"a.test\"; sid:1;)\n",
        "alert ip any any -> any any (quic.sni; content:\"a.test\"; sid:2;)\n",
    ));
    let with = |protocol, sni: &str| Classification {
        protocol,
        host: Some(sni.to_ascii_lowercase()),
        info: AppInfo {
            sni_raw: Some(sni.into()),
            ..AppInfo::default()
        },
        ..Classification::default()
    };
    let (tls, quic, dtls) = (
        with(Protocol::Tls, "a.test"),
        with(Protocol::Quic, "a.test"),
        with(Protocol::Dtls, "a.test"),
    );
    assert_eq!(sids(&s, &packet(b"", Some(&tls))), [1]);
    assert_eq!(sids(&s, &packet(b"", Some(&quic))), [2]);
    assert!(sids(&s, &packet(b"", Some(&dtls))).is_empty());
    // as sent: a rule without nocase is case-sensitive, as Suricata's
    let upper = with(Protocol::Tls, "A.Test");
    assert!(sids(&s, &packet(b"", Some(&upper))).is_empty());
}

/// What Suricata refuses because it can never match.
#[test]
fn contents_that_can_never_match_are_refused() {
    for (rule, says) in [
        (
            "alert tcp any any -> any any (content:\"abcdef\"; depth:3; sid:1;)",
            "depth:3",
        ),
        (
            "alert tcp any any -> any any (content:\"a\"; content:\"abcdef\"; distance:0; within:2; sid:1;)",
            "within:2",
        ),
        (
            "alert http any any -> any any (http.host; content:\"Evil.test\"; sid:1;)",
            "lower case",
        ),
    ] {
        let e = errors(&format!("{rule}\n"));
        assert!(e[0].message.contains(says), "{rule}: {e:?}");
    }
    // with nocase, an upper-case host pattern is fine
    set("alert http any any -> any any (http.host; content:\"Evil.test\"; nocase; sid:1;)\n");
}

/// `startswith`, `endswith`, `bsize` and `dsize`, as Suricata reads them.
#[test]
fn anchors_and_sizes() {
    let app = Classification {
        protocol: Protocol::Http,
        info: AppInfo {
            http_uri: Some("/admin/login.php".into()),
            ..AppInfo::default()
        },
        ..Classification::default()
    };
    let s = set(concat!(
        "alert http any any -> any any (http.uri; content:\"/admin\"; startswith; sid:1;)\n",
        "alert http any any -> any any (http.uri; content:\"login\"; startswith; sid:2;)\n",
        "alert http any any -> any any (http.uri; content:\".php\"; endswith; sid:3;)\n",
        "alert http any any -> any any (http.uri; content:\"/admin\"; endswith; sid:4;)\n",
        "alert http any any -> any any (http.uri; bsize:16; sid:5;)\n",
        "alert http any any -> any any (http.uri; bsize:<10; sid:6;)\n",
        "alert http any any -> any any (http.uri; bsize:10<>20; sid:7;)\n",
        "alert tcp any any -> any any (dsize:>3; sid:8;)\n",
        "alert tcp any any -> any any (dsize:<3; sid:9;)\n",
        "alert http any any -> any any (http.uri; content:\"/admin/login.php\"; startswith; endswith; sid:10;)\n",
    ));
    assert_eq!(sids(&s, &packet(b"GET /", Some(&app))), [1, 3, 5, 7, 8, 10]);
    assert_eq!(sids(&s, &packet(b"ab", Some(&app))), [1, 3, 5, 7, 9, 10]);
    let e = errors("alert tcp any any -> any any (content:\"a\"; offset:1; startswith; sid:1;)\n");
    assert!(e[0].message.contains("startswith"), "{e:?}");
    let e = errors("alert tcp any any -> any any (dsize:5<>6; sid:1;)\n");
    assert!(e[0].message.contains("no size"), "{e:?}");
}

/// `flags` as Suricata compares them, and `ip_proto`.
#[test]
fn tcp_flags_and_ip_proto() {
    let s = set(concat!(
        "alert tcp any any -> any any (flags:S; sid:1;)\n",
        "alert tcp any any -> any any (flags:+S; sid:2;)\n",
        "alert tcp any any -> any any (flags:*SF; sid:3;)\n",
        "alert tcp any any -> any any (flags:!R; sid:4;)\n",
        "alert tcp any any -> any any (flags:S,CE; sid:5;)\n",
        "alert ip any any -> any any (flags:PA; sid:6;)\n",
        "alert ip any any -> any any (ip_proto:6; sid:7;)\n",
        "alert ip any any -> any any (ip_proto:udp; sid:8;)\n",
    ));
    let mut p = packet(b"", None);
    let mut with = |flags: u8| {
        p.tcp_flags = Some(flags);
        sids(&s, &p)
    };
    assert_eq!(with(0x02), [1, 2, 3, 4, 5, 7], "a SYN");
    assert_eq!(with(0x12), [2, 3, 4, 7], "a SYN/ACK");
    assert_eq!(
        with(0xc2),
        [2, 3, 4, 5, 7],
        "a SYN with ECN bits, which sid 5 ignores"
    );
    assert_eq!(with(0x18), [4, 6, 7], "PSH/ACK");
    assert_eq!(with(0x14), [7], "RST/ACK");
    let e = errors("alert udp any any -> any any (flags:S; sid:1;)\n");
    assert!(e[0].message.contains("TCP"), "{e:?}");
    let e = errors("alert tcp any any -> any any (ip_proto:17; sid:1;)\n");
    assert!(e[0].message.contains("contradicts"), "{e:?}");
    let e = errors("alert tcp any any -> any any (flags:SX; sid:1;)\n");
    assert!(e[0].message.contains("`X`"), "{e:?}");
}

/// As Suricata reads a header: `icmp` is either ICMP, and a set made only
/// of negated IPv4 networks holds no IPv6 address.
#[test]
fn icmp_means_both_and_negations_keep_their_family() {
    let s = set(concat!(
        "alert icmp any any -> any any (sid:1;)\n",
        "alert ip any any -> ![10.0.0.0/8] any (sid:2;)\n",
        "alert ip any any -> ![2001:db8::/32] any (sid:3;)\n",
        "alert icmp any any -> any any (ip_proto:58; sid:4;)\n",
    ));
    let mut p = packet(b"", None);
    p.tcp_flags = None;
    p.l4 = 1;
    assert_eq!(sids(&s, &p), [1, 2]);
    p.l4 = 58;
    p.src = "2001:db8::1".parse().unwrap();
    p.dst = "2001:db9::2".parse().unwrap();
    assert_eq!(sids(&s, &p), [1, 3, 4]);
    p.l4 = 6;
    assert_eq!(sids(&s, &p), [3]);
    let e = errors("alert icmp any any -> any any (ip_proto:6; sid:1;)\n");
    assert!(e[0].message.contains("contradicts"), "{e:?}");
}

/// A rule testing each packet (size, flags other than a SYN's) can match
/// any later packet, so the flow stays inspected; one needing a SYN only
/// until the handshake is done.
#[test]
fn per_packet_tests_keep_a_flow_inspected() {
    let facts = FlowFacts {
        l4: 6,
        client: "198.18.0.1:40000".parse().unwrap(),
        server: "198.18.0.2:80".parse().unwrap(),
        protocol: Protocol::Http,
        established: true,
    };
    for (rule, later) in [
        ("flags:F,PA;", true),
        ("flags:+R;", true),
        ("dsize:>1400;", true),
        ("flags:S;", false),
        ("flags:S,12;", false),
        ("flow:established;", false),
    ] {
        let s = set(&format!("alert tcp any any -> any any ({rule} sid:1;)\n"));
        assert_eq!(s.could_match(&facts), later, "{rule}");
    }
}

/// byte_test, byte_jump, byte_extract and isdataat on a DNS-like header:
/// positions move as Suricata's do, variables feed later options.
#[test]
fn byte_keywords_and_isdataat() {
    // id 0x1234, flags 0x0100, qdcount 1, then a name 3www6google3com0
    let mut msg = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    msg.extend_from_slice(b"\x03www\x06google\x03com\x00\x00\x01\x00\x01");
    let s = set(concat!(
        "alert udp any any -> any any (byte_test:2,=,1,4; sid:1;)\n",
        "alert udp any any -> any any (byte_test:2,&,0x8000,2; sid:2;)\n",
        "alert udp any any -> any any (byte_test:1,=,0,2,bitmask 0x78; sid:3;)\n",
        "alert udp any any -> any any (byte_test:2,!=,1,4; sid:4;)\n",
        "alert udp any any -> any any (byte_jump:1,12; content:\"|06|google\"; within:7; sid:5;)\n",
        "alert udp any any -> any any (byte_jump:1,12; byte_jump:1,0,relative; content:\"|03|com\"; within:4; sid:6;)\n",
        "alert udp any any -> any any (byte_extract:1,12,len; content:\"www\"; within:len; sid:7;)\n",
        "alert udp any any -> any any (byte_extract:1,12,len; isdataat:len,relative; isdataat:!40; sid:8;)\n",
        "alert udp any any -> any any (byte_jump:2,4,multiplier 100; sid:9;)\n",
        "alert udp any any -> any any (byte_jump:1,12,from_beginning,post_offset 1; content:\"|01|\"; within:1; sid:10;)\n",
    ));
    let mut p = packet(&msg, None);
    p.l4 = 17;
    p.tcp_flags = None;
    assert_eq!(sids(&s, &p), [1, 3, 5, 6, 7, 8]);
    // digits: Content-Length: 1234
    let s = set(concat!(
        "alert tcp any any -> any any (content:\"Length: \"; byte_test:4,>,1000,0,relative,string,dec; sid:1;)\n",
        "alert tcp any any -> any any (content:\"Length: \"; byte_extract:2,0,n,relative,string; byte_test:2,>,n,0,relative,string; sid:2;)\n",
        "alert tcp any any -> any any (content:\"Length: \"; byte_test:4,<,1000,0,relative,string,dec; sid:3;)\n",
    ));
    assert_eq!(sids(&s, &packet(b"Content-Length: 1234\r\n", None)), [1, 2]);
    let e = errors("alert tcp any any -> any any (content:\"x\"; within:nope; sid:1;)");
    assert!(e[0].message.contains("byte_extract variable"), "{e:?}");
    let e = errors("alert tcp any any -> any any (byte_test:9,=,1,0; sid:1;)");
    assert!(e[0].message.contains("1 to 8"), "{e:?}");
    let e = errors("alert tcp any any -> any any (byte_test:2,~,1,0; sid:1;)");
    assert!(e[0].message.contains("operator"), "{e:?}");
}

/// Flowbits: a setter runs before a checker on the same packet; noalert
/// acts without an alert; `&` is refused, as Suricata would read it as a
/// name never set.
#[test]
fn flowbits_carry_state_across_packets() {
    let s = set(concat!(
        "alert tcp any any -> any any (content:\"login\"; flowbits:set,auth; flowbits:noalert; sid:1;)\n",
        "alert tcp any any -> any any (flowbits:isset,auth; content:\"secret\"; sid:2;)\n",
        "alert tcp any any -> any any (flowbits:isnotset,auth; content:\"secret\"; sid:3;)\n",
        "alert tcp any any -> any any (content:\"logout\"; flowbits:unset,auth; sid:4;)\n",
        "alert tcp any any -> any any (flowbits:isset,auth|admin; content:\"x\"; sid:5;)\n",
    ));
    let mut bits = FlowBits::default();
    let mut run = |payload: &[u8]| -> Vec<(u32, bool)> {
        s.matches(&packet(payload, None), &mut bits)
            .hits
            .into_iter()
            .map(|h| (h.sid, h.alert))
            .collect()
    };
    assert_eq!(run(b"secret"), [(3, true)]);
    assert_eq!(run(b"login secret x"), [(1, false), (2, true), (5, true)]);
    assert_eq!(run(b"secret"), [(2, true)]);
    assert_eq!(run(b"logout"), [(4, true)]);
    assert_eq!(run(b"secret"), [(3, true)]);
    let e = errors("alert tcp any any -> any any (flowbits:isset,a&b; sid:1;)");
    assert!(
        e[0].message.contains("one flowbits option per bit"),
        "{e:?}"
    );
    let e = errors("alert tcp any any -> any any (flowbits:set,a|b; sid:1;)");
    assert!(e[0].message.contains("only for isset"), "{e:?}");
}

/// threshold and detection_filter count matches per period across flows,
/// by the tracked address.
#[test]
fn thresholds_count_per_period() {
    let s = set(concat!(
        "alert tcp any any -> any any (content:\"x\"; threshold:type limit, track by_src, count 2, seconds 10; sid:1;)\n",
        "alert tcp any any -> any any (content:\"x\"; threshold:type threshold, track by_dst, count 3, seconds 10; sid:2;)\n",
        "alert tcp any any -> any any (content:\"x\"; threshold:type both, track by_rule, count 2, seconds 10; sid:3;)\n",
        "alert tcp any any -> any any (content:\"x\"; detection_filter:track by_src, count 2, seconds 10; sid:4;)\n",
    ));
    let at = |secs: u64| {
        let mut p = packet(b"x", None);
        p.now_ns = secs * 1_000_000_000;
        sids(&s, &p)
    };
    assert_eq!(at(0), [1]);
    assert_eq!(at(1), [1, 3]);
    assert_eq!(at(2), [2, 4]);
    assert_eq!(at(3), [4]);
    // a new period: counting starts again
    assert_eq!(at(30), [1]);
    let e =
        errors("alert tcp any any -> any any (threshold:type limit, count 1, seconds 1; sid:1;)");
    assert!(e[0].message.contains("track"), "{e:?}");
}

#[test]
fn ttl_icmp_urilen_fast_pattern() {
    let s = set(concat!(
        "alert ip any any -> any any (ttl:<65; sid:1;)\n",
        "alert ip any any -> any any (ttl:100-200; sid:2;)\n",
        "alert icmp any any -> any any (itype:3; icode:>0; sid:3;)\n",
        "alert tcp any any -> any any (content:\"abcdef\"; fast_pattern:2,3; sid:4;)\n",
    ));
    let mut p = packet(b"xxabcdefxx", None);
    assert_eq!(sids(&s, &p), [1, 4]);
    p.ttl = 150;
    p.l4 = 1;
    p.icmp = Some((3, 3));
    assert_eq!(sids(&s, &p), [2, 3]);
    let e = errors("alert tcp any any -> any any (itype:3; sid:1;)");
    assert!(e[0].message.contains("ICMP"), "{e:?}");
    let e = errors("alert tcp any any -> any any (content:\"ab\"; fast_pattern:1,5; sid:1;)");
    assert!(e[0].message.contains("reaches past"), "{e:?}");
    let e = errors("alert ip any any -> any any (ttl:>255; sid:1;)");
    assert!(e[0].message.contains("never match"), "{e:?}");
}

/// HTTP buffers of both messages, by the packet's direction; what Suricata
/// refuses as conflicting directions is refused.
#[test]
fn http_request_and_response_buffers() {
    let mut requests = crate::http::HttpRequests::new(false, true);
    let mut req = Vec::new();
    requests.feed(
        b"GET / HTTP/1.1\r\nHost: a.test:81\r\nCookie: id=7\r\nReferer: http://r.test/\r\n\r\n",
        &mut req,
    );
    let mut responses = crate::http::HttpResponses::new(true);
    responses.expect("GET");
    let mut resp = Vec::new();
    responses.feed(
        b"HTTP/1.1 302 Found\r\nServer: nginx\r\nLocation: http://x.test/\r\nSet-Cookie: s=1\r\nContent-Length: 4\r\n\r\nbody",
        &mut resp,
    );
    let s = set(concat!(
        "alert http any any -> any any (http.cookie; content:\"id=7\"; sid:1;)\n",
        "alert http any any -> any any (http.host.raw; content:\":81\"; sid:2;)\n",
        "alert http any any -> any any (http.referer; content:\"r.test\"; sid:3;)\n",
        "alert http any any -> any any (http.stat_code; content:\"302\"; http.server; content:\"nginx\"; sid:4;)\n",
        "alert http any any -> any any (http.cookie; content:\"s=1\"; sid:5;)\n",
        "alert http any any -> any any (file.data; content:\"body\"; sid:6;)\n",
        "alert http any any -> any any (http.header; content:\"Location|3a| http\"; sid:7;)\n",
        "alert http any any -> any any (http.header; content:\"Cookie\"; sid:8;)\n",
    ));
    let http = Classification {
        protocol: Protocol::Http,
        ..Classification::default()
    };
    let mut p = packet(b"", Some(&http));
    p.http_request = Some(&req[0].head);
    assert_eq!(sids(&s, &p), [1, 2, 3]);
    p.to_server = false;
    p.http_response = Some(&resp[0]);
    p.response_body = Some(responses.body());
    assert_eq!(sids(&s, &p), [4, 5, 6, 7]);
    for bad in [
        "alert http any any -> any any (http.host; content:\"a\"; http.stat_code; content:\"2\"; sid:1;)",
        "alert http any any -> any any (flow:to_client; http.uri; content:\"a\"; sid:1;)",
        "alert http any any -> any any (http.header.raw; content:\"a\"; sid:1;)",
    ] {
        let e = errors(bad);
        assert!(
            e[0].message.contains("direction"),
            "{bad}: {}",
            e[0].message
        );
    }
}

#[test]
fn reject_actions() {
    use crate::reject::Reject;
    let s = set(concat!(
        "reject tcp any any -> any any (content:\"x\"; sid:1;)\n",
        "rejectsrc tcp any any -> any any (content:\"x\"; sid:2;)\n",
        "rejectdst tcp any any -> any any (content:\"x\"; sid:3;)\n",
        "rejectboth tcp any any -> any any (content:\"x\"; sid:4;)\n",
    ));
    let actions: Vec<Action> = s.rules().iter().map(|r| r.action).collect();
    assert_eq!(
        actions,
        [
            Action::Reject(Reject::Source),
            Action::Reject(Reject::Source),
            Action::Reject(Reject::Destination),
            Action::Reject(Reject::Both),
        ]
    );
    assert_eq!(actions[3].name(), "rejectboth");
}

#[test]
fn gid_classtype_and_priority_give_an_alerts_identity_and_severity() {
    let s = set(concat!(
        "alert tcp any any -> any any (msg:\"one\"; content:\"x\"; classtype:trojan-activity; sid:1; rev:4;)\n",
        "alert tcp any any -> any any (msg:\"two\"; content:\"x\"; classtype:misc-activity; priority:1; gid:3; sid:2;)\n",
        "alert tcp any any -> any any (msg:\"three\"; content:\"x\"; sid:3;)\n",
    ));
    let rules = s.rules();
    assert_eq!((rules[0].gid, rules[0].rev, rules[0].severity()), (1, 4, 1));
    assert_eq!(
        rules[0].class.map(|c| c.description),
        Some("A Network Trojan was detected")
    );
    assert_eq!(
        (rules[1].gid, rules[1].severity()),
        (3, 1),
        "priority wins over the classtype's"
    );
    assert_eq!((rules[2].class, rules[2].severity()), (None, 3));
    // hits name their rule
    let hits = s
        .matches(&packet(b"x", None), &mut FlowBits::default())
        .hits;
    assert_eq!(
        hits.iter().map(|h| rules[h.rule].sid).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    let e = errors(
        "alert tcp any any -> any any (msg:\"m\"; content:\"x\"; classtype:no-such-class; sid:9;)\n",
    );
    assert!(
        e[0].to_string()
            .contains("unknown classtype `no-such-class`"),
        "{}",
        e[0]
    );
}
