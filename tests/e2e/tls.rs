//! regcache's registry listener over TLS with a CA made for the test: skopeo pulls an image
//! through it byte for byte when given the CA (`--src-cert-dir`), and refuses the mirror with
//! its default verification when not. Needs `docker-registry` and `skopeo` (see registry.rs).

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

use crate::registry::Upstream;
use crate::support::e2e::{self, tools_present, Clock};

/// `ca.crt` in `certs/`, and `server.crt`/`server.key` for 127.0.0.1 signed by it, under `dir`.
fn make_pki(dir: &std::path::Path) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "regcache e2e CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let cert = server.signed_by(&key, &issuer).unwrap();
    std::fs::create_dir_all(dir.join("certs")).unwrap();
    std::fs::write(dir.join("certs/ca.crt"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("server.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
}

#[tokio::test]
async fn skopeo_pulls_over_tls_with_the_ca_and_refuses_the_mirror_without_it() {
    if !tools_present("skopeo_pulls_over_tls_with_the_ca_and_refuses_the_mirror_without_it") {
        return;
    }
    let clock = Clock::new("tls");
    let upstream = Upstream::start(&clock).await;
    upstream.pull_direct(&clock).await;
    let work = tempfile::tempdir().unwrap();
    make_pki(work.path());
    let text = format!(
        "listen = \"127.0.0.1:0\"\nbuiltin_upstreams = false\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [cache]\ndir = {cache:?}\n[tls]\ncert_file = {cert:?}\nkey_file = {key:?}\n\
         [[upstreams]]\nhost = \"docker.io\"\nurl = {url:?}\n",
        cache = work.path().join("cache").display().to_string(),
        cert = work.path().join("server.crt").display().to_string(),
        key = work.path().join("server.key").display().to_string(),
        url = upstream.registry.url(),
    );
    let config = regcache::config::Config::from_toml_str(&text).expect("regcache config");
    let running = regcache::app::start(config).await.expect("start regcache");
    let image = upstream.public().next().expect("a public image");
    let src = format!("docker://{}/{}", running.local_addr(), image.reference());
    let certs = work.path().join("certs").display().to_string();
    let out = work.path().join("pulled");
    let dst = format!("dir:{}", out.display());
    let verified = [
        "--all",
        "--src-no-creds",
        "--src-tls-verify=true",
        "--src-cert-dir",
        &certs,
    ];
    upstream
        .skopeo
        .copy(&src, &dst, &verified, None)
        .await
        .expect("pull over TLS with the CA");
    let files = e2e::compare_dirs(&upstream.direct_dir(image), &out).expect("identical to a direct pull");
    clock.mark(&format!(
        "pulled {} over TLS: {files} files identical",
        image.reference()
    ));
    let refused = upstream
        .skopeo
        .copy(
            &src,
            &format!("dir:{}", work.path().join("refused").display()),
            &["--all", "--src-no-creds"],
            None,
        )
        .await
        .expect_err("the mirror's certificate is not trusted by default");
    assert!(refused.contains("certificate"), "{refused}");
    running.shutdown().await;
}
