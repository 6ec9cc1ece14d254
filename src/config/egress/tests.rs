use super::*;

fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

fn from(proxy: Option<&str>, no_proxy: &[&str], env: &[(&str, &str)]) -> Result<EgressConfig, Vec<String>> {
    let mut errors = Vec::new();
    let no_proxy: Vec<String> = no_proxy.iter().map(|s| s.to_string()).collect();
    let c = validate(&mut errors, proxy, &no_proxy, env_of(env));
    if errors.is_empty() {
        Ok(c)
    } else {
        Err(errors)
    }
}

fn authority(p: Option<&ProxyUrl>) -> Option<&str> {
    p.map(|p| p.authority.as_str())
}

#[test]
fn a_configured_proxy_takes_every_upstream_but_no_proxy() {
    let env = [("HTTPS_PROXY", "http://ignored:1")];
    let c = from(
        Some("http://proxy.corp:3128"),
        &["registry.lab", "10.0.0.0/8"],
        &env,
    )
    .unwrap();
    assert_eq!(
        authority(c.proxy_for(true, "registry-1.docker.io")),
        Some("proxy.corp:3128")
    );
    assert_eq!(
        authority(c.proxy_for(false, "lab.example")),
        Some("proxy.corp:3128")
    );
    assert_eq!(c.proxy_for(true, "registry.lab"), None);
    assert_eq!(c.proxy_for(true, "blobs.registry.lab"), None);
    assert_eq!(c.proxy_for(true, "10.1.2.3"), None);
    // Loopback is proxied too when the file says so: the setting is explicit.
    assert!(c.proxy_for(true, "127.0.0.1").is_some());
    assert_eq!(c.source, "fetch.proxy");

    let none = from(Some("none"), &[], &env).unwrap();
    assert!(none.proxy_for(true, "ghcr.io").is_none());
}

#[test]
fn the_environment_decides_when_the_file_does_not() {
    let env = [
        ("https_proxy", "proxy.corp:8080"),
        ("HTTP_PROXY", "http://plain.corp"),
        (
            "no_proxy",
            " .svc.cluster.local, *.internal ,192.168.0.0/16,[::1]:5000,registry:5000",
        ),
    ];
    for proxy in [None, Some("env")] {
        let c = from(proxy, &["extra.example"], &env).unwrap();
        assert_eq!(c.source, "environment");
        assert_eq!(authority(c.https.as_ref()), Some("proxy.corp:8080"));
        assert_eq!(authority(c.http.as_ref()), Some("plain.corp:80"));
        for direct in [
            "localhost",
            "127.0.0.1",
            "[::1]",
            "x.svc.cluster.local",
            "svc.cluster.local",
            "a.b.internal",
            "192.168.7.7",
            "registry",
            "extra.example",
        ] {
            assert!(c.proxy_for(true, direct).is_none(), "{direct} should be direct");
        }
        for proxied in [
            "ghcr.io",
            "notinternal",
            "192.169.0.1",
            "127.0.0.1.nip.io",
            "cluster.local",
        ] {
            assert!(
                c.proxy_for(true, proxied).is_some(),
                "{proxied} should be proxied"
            );
        }
    }
    let all = from(
        None,
        &[],
        &[("ALL_PROXY", "http://all:3128"), ("HTTP_PROXY", "http://h:1")],
    )
    .unwrap();
    assert_eq!(authority(all.https.as_ref()), Some("all:3128"));
    assert_eq!(authority(all.http.as_ref()), Some("h:1"));
    let empty = from(None, &[], &[("HTTPS_PROXY", "  ")]).unwrap();
    assert!(empty.https.is_none() && empty.http.is_none());
    assert_eq!(empty.describe(), "direct (environment)");
}

#[test]
fn credentials_are_decoded_and_never_described() {
    let c = from(Some("http://robot%40corp:p%3Ass@[fd00::7]:3128/"), &[], &[]).unwrap();
    let p = c.https.as_ref().unwrap();
    assert_eq!(p.authority, "[fd00::7]:3128");
    let (user, pass) = p.credentials.as_ref().unwrap();
    assert_eq!((user.as_str(), pass.expose()), ("robot@corp", "p:ss"));
    let text = format!("{} {c:?}", c.describe());
    assert!(!text.contains("p:ss") && !text.contains("p%3Ass"), "{text}");
    assert!(
        text.contains("http://robot@corp@[fd00::7]:3128 (password set)"),
        "{text}"
    );
    assert_eq!(p.url(), "http://robot%40corp:p%3Ass@[fd00::7]:3128");
    let again = from(Some(&p.url()), &[], &[]).unwrap();
    assert_eq!(
        again.https.as_ref(),
        Some(p),
        "url() reads back as the same proxy"
    );
}

#[test]
fn bad_settings_are_one_line_each() {
    let errors = from(Some("https://proxy:443"), &["bad entry", "/8"], &[]).unwrap_err();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(
        errors[0].starts_with("fetch.no_proxy: \"bad entry\" is not a host"),
        "{errors:?}"
    );
    assert!(
        errors[2].starts_with("fetch.proxy: https:// proxies (TLS to the proxy) are not supported"),
        "{errors:?}"
    );
    let errors = from(None, &[], &[("HTTPS_PROXY", "socks4://s:1080")]).unwrap_err();
    assert_eq!(
        errors,
        ["HTTPS_PROXY: socks4:// proxies are not supported, only http://, socks5:// and socks5h://"]
    );
    let errors = from(Some("http://proxy:3128/path"), &[], &[]).unwrap_err();
    assert_eq!(errors, ["fetch.proxy: a proxy URL has no path or query"]);
    let errors = from(Some("http://:3128"), &[], &[]).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
}

#[test]
fn networks_match_by_prefix() {
    let n = NoProxy(vec!["10.0.0.0/8".into(), "fd00::/8".into(), "0.0.0.0/0".into()]);
    assert!(n.matches("10.255.0.1") && n.matches("fd12::1") && n.matches("8.8.8.8"));
    assert!(!NoProxy(vec!["fd00::/8".into()]).matches("fe80::1"));
    assert!(!NoProxy(vec!["10.0.0.0/8".into()]).matches("::ffff:10.0.0.1"));
    assert!(NoProxy(vec!["*".into()]).matches("anything"));
}

#[test]
fn socks5_proxies_resolve_here_or_there() {
    let c = from(Some("socks5h://u:p@bastion"), &[], &[]).unwrap();
    let p = c.https.as_ref().unwrap();
    assert_eq!(p.kind, ProxyKind::Socks5 { remote_dns: true });
    assert_eq!(p.authority, "bastion:1080");
    assert_eq!(p.url(), "socks5h://u:p@bastion:1080");
    assert!(
        c.describe().contains("socks5h://u@bastion:1080 (password set)"),
        "{}",
        c.describe()
    );
    let env = from(None, &[], &[("ALL_PROXY", "socks5://127.0.0.1:9050")]).unwrap();
    let p = env.http.as_ref().unwrap();
    assert_eq!(
        (p.kind, p.authority.as_str()),
        (ProxyKind::Socks5 { remote_dns: false }, "127.0.0.1:9050")
    );
}
