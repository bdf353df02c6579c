//! A Dovecot's configuration: `dovecot.conf`, file modes and owners, and
//! the test's own CA and server certificate.

use std::{path::Path, process::Stdio};

use super::Dovecot;

impl Dovecot {
    /// Writes `dovecot.conf`: loopback only, its own directories, the
    /// passwd-file users, TLS listeners when started with TLS.
    pub(super) fn write_config(&self) {
        let d = self.dir.path().display();
        let ssl = match self.tls_port {
            Some(tls_port) => format!(
                "ssl = yes\nssl_cert = <{d}/cert.pem\nssl_key = <{d}/key.pem\n\
                 service imap-login {{\n  chroot =\n  inet_listener imap {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n\
                 \x20 inet_listener imaps {{\n    address = 127.0.0.1\n    port = {tls_port}\n    ssl = yes\n  }}\n}}\n",
                port = self.port
            ),
            None => format!(
                "ssl = no\nservice imap-login {{\n  chroot =\n  inet_listener imap {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n\
                 \x20 inet_listener imaps {{\n    port = 0\n  }}\n}}\n",
                port = self.port
            ),
        };
        let config = format!(
            "# Written by guichet-harness for one test.\n\
             protocols = imap\n\
             listen = 127.0.0.1\n\
             base_dir = {d}/run\n\
             state_dir = {d}/state\n\
             instance_name = guichet-test-{port}\n\
             log_path = {d}/dovecot.log\n\
             info_log_path = {d}/dovecot.log\n\
             debug_log_path = {d}/dovecot.log\n\
             default_internal_user = dovecot\n\
             default_login_user = dovenull\n\
             first_valid_uid = 1\n\
             disable_plaintext_auth = no\n\
             auth_mechanisms = plain login\n\
             mail_location = maildir:{d}/mail/%u\n\
             imap_idle_notify_interval = 2 mins\n\
             mail_max_userip_connections = 100\n\
             passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN {d}/passwd\n}}\n\
             userdb {{\n  driver = static\n  args = uid=dovecot gid=dovecot home={d}/mail/%u\n}}\n\
             service anvil {{\n  chroot =\n}}\n\
             {ssl}",
            port = self.port
        );
        std::fs::write(self.dir.path().join("dovecot.conf"), config).expect("dovecot.conf");
    }
}

pub(super) fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

pub(super) fn chown_dovecot(path: &Path) {
    let user = nix::unistd::User::from_name("dovecot")
        .ok()
        .flatten()
        .expect("a `dovecot` system user (install dovecot-imapd: scripts/bootstrap)");
    std::os::unix::fs::chown(path, Some(user.uid.as_raw()), Some(user.gid.as_raw())).expect("chown maildir");
}

/// A private CA (`ca.pem`) and a server certificate it signed
/// (`cert.pem`, `key.pem`) for `localhost` / 127.0.0.1, for this test only.
/// (A lone self-signed certificate is a CA certificate, which rustls
/// rightly refuses as a server's own.)
pub(super) fn generate_certificate(dir: &Path) {
    let openssl = |args: &[&str]| {
        let status = std::process::Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl runs (scripts/bootstrap installs it)");
        assert!(status.success(), "openssl {args:?} failed");
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    openssl(
        &[
            &["req", "-x509"],
            &ec[..],
            &[
                "-days",
                "2",
                "-subj",
                "/CN=guichet test CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"],
            &ec[..],
            &["-subj", "/CN=localhost", "-keyout", "key.pem", "-out", "server.csr"],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .expect("certificate extensions");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "cert.pem",
    ]);
}
