//! sftpd with real clients on loopback: OpenSSH `sftp` (key and password via `sshpass`),
//! `scp` (SFTP mode), `curl sftp://` and paramiko. These tests create a system account
//! (`useradd`) and a root-owned chroot under `/srv`, so they run as root (CI does).

use std::fs;
use std::path::Path;
use std::process::Command;

use airlift_tests::sftp::{
    ClientKey, Jail, Login, Sftpd, SystemUser, key_command, run_with_stdin, sftp_batch,
};
use airlift_tests::{CLIENT_TIMEOUT, describe, pseudo_random, run_with_timeout, sha256_file};

const BIN: &str = env!("CARGO_BIN_EXE_sftpd");
const PASSWORD: &str = "s3cret-Pw";

/// The scene most tests share: a user, a jail with `images/` (root's) and `upload/` (the
/// user's), a key in a root-owned AuthorizedKeysFile, and the source document's Match block.
struct Scene {
    user: SystemUser,
    jail: Jail,
    key: ClientKey,
    _keys_dir: Jail,
    config: String,
}

impl Scene {
    fn new(name: &str, force_command: &str) -> Scene {
        let user = SystemUser::new(name, PASSWORD, &["sftp"]);
        let jail = Jail::new(name);
        jail.dir("images", 0o755, 0, 0);
        jail.dir("upload", 0o755, user.uid, user.gid);
        let key = ClientKey::new();
        // sshd's StrictModes refuses key files under a world-writable /tmp, and so do we.
        let keys_dir = Jail::new(&format!("{name}-keys"));
        fs::write(keys_dir.path().join(name), format!("{}\n", key.public)).expect("authkeys");
        let config = format!(
            "# Debian's defaults, then the source document's Match block\n\
             Include /etc/ssh/sshd_config.d/*.conf\n\
             KbdInteractiveAuthentication no\n\
             UsePAM no\n\
             X11Forwarding yes\n\
             PrintMotd no\n\
             AcceptEnv LANG LC_*\n\
             Subsystem sftp /usr/lib/openssh/sftp-server -l VERBOSE\n\
             LogLevel VERBOSE\n\
             AuthorizedKeysFile {keys}/%u\n\
             Match User {name}\n\
             Match group sftp\n\
             ChrootDirectory {jail}\n\
             X11Forwarding no\n\
             AllowTcpForwarding no\n\
             ForceCommand {force_command}\n",
            keys = keys_dir.path().display(),
            jail = jail.path().display(),
        );
        Scene {
            user,
            jail,
            key,
            _keys_dir: keys_dir,
            config,
        }
    }

    fn image(&self, name: &str, len: usize, seed: u64) -> std::path::PathBuf {
        let p = self.jail.path().join("images").join(name);
        fs::write(&p, pseudo_random(len, seed)).expect("write image");
        p
    }

    fn start(&self) -> Sftpd {
        Sftpd::start(BIN, &self.config, &[])
    }
}

fn assert_ok(out: &std::process::Output, what: &str) {
    assert!(out.status.success(), "{what}: {}", describe(out));
}

/// [`assert_ok`] with the server's log in the failure message.
fn assert_served(out: &std::process::Output, server: &Sftpd, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}\nserver log:\n{}",
        describe(out),
        server.log().lines().join("\n")
    );
}

/// Lines of one internal-sftp session, from `session opened` to `session closed`.
fn session_lines(lines: &[String], user: &str) -> Vec<String> {
    let open = format!("session opened for local user {user} from [127.0.0.1]");
    let close = format!("session closed for local user {user} from [127.0.0.1]");
    let start = lines
        .iter()
        .position(|l| *l == open)
        .expect("session opened line");
    let end = lines[start..]
        .iter()
        .position(|l| *l == close)
        .expect("session closed line");
    lines[start..=start + end].to_vec()
}

#[test]
fn key_download_70mb_logs_like_openssh() {
    let scene = Scene::new("sftpe2ea", "internal-sftp -l VERBOSE");
    let image = scene.image("apig8", 70_512_640, 8);
    let server = scene.start();
    let out_dir = tempfile::tempdir().expect("tempdir");
    let local = out_dir.path().join("apig8");
    let batch = format!("get /images/apig8 {}\n", local.display());
    let out = sftp_batch(
        server.addr(),
        &scene.user.name,
        Login::Key(&scene.key.private),
        &batch,
        &[],
    );
    assert_served(&out, &server, "sftp get");
    assert_eq!(sha256_file(&local), sha256_file(&image));
    let u = &scene.user.name;
    server.wait_for_line(&format!(
        "session closed for local user {u} from [127.0.0.1]"
    ));
    server
        .log()
        .wait_for_log("Disconnected from user", CLIENT_TIMEOUT, |l| {
            l.starts_with(&format!("Disconnected from user {u} 127.0.0.1 port "))
        });
    let lines = server.log().lines();
    let fp = scene.key.fingerprint();
    let port_of = |prefix: &str| -> String {
        let l = lines
            .iter()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix:?} in {lines:#?}"));
        l[prefix.len()..]
            .split(' ')
            .next()
            .expect("port")
            .to_owned()
    };
    let port = port_of(&format!("Accepted publickey for {u} from 127.0.0.1 port "));
    let expect_sshd = [
        format!("Accepted publickey for {u} from 127.0.0.1 port {port} ssh2: ED25519 {fp}"),
        format!(
            "Changed root directory to \"{}\"",
            scene.jail.path().display()
        ),
        format!(
            "Starting session: forced-command (config) 'internal-sftp -l VERBOSE' for {u} from 127.0.0.1 port {port} id 0"
        ),
        format!("Disconnected from user {u} 127.0.0.1 port {port}"),
    ];
    for l in &expect_sshd {
        assert!(lines.contains(l), "missing {l:?} in {lines:#?}");
    }
    assert!(
        lines.iter().any(|l| l.starts_with("Accepted key ED25519 ")
            && l.contains(&fp)
            && l.ends_with(&format!("/{u}:1"))),
        "{lines:#?}"
    );
    assert_eq!(
        session_lines(&lines, u),
        [
            format!("session opened for local user {u} from [127.0.0.1]"),
            "received client version 3".to_owned(),
            "realpath \".\"".to_owned(),
            "lstat name \"/images/apig8\"".to_owned(),
            "stat name \"/images/apig8\"".to_owned(),
            "open \"/images/apig8\" flags READ mode 0666".to_owned(),
            "close \"/images/apig8\" bytes read 70512640 written 0".to_owned(),
            format!("session closed for local user {u} from [127.0.0.1]"),
        ]
    );
}

#[test]
fn controller_image_301mb_with_aes128_gcm() {
    let scene = Scene::new("sftpe2eb", "internal-sftp");
    let image = scene.image("C9800-AP-iosxe-wlc.bin", 301_257_756, 9800);
    let server = scene.start();
    let out_dir = tempfile::tempdir().expect("tempdir");
    let local = out_dir.path().join("wlc.bin");
    let out = sftp_batch(
        server.addr(),
        &scene.user.name,
        Login::Key(&scene.key.private),
        &format!("get /images/C9800-AP-iosxe-wlc.bin {}\n", local.display()),
        &["-c", "aes128-gcm@openssh.com"],
    );
    assert_served(&out, &server, "sftp get 301 MB");
    assert_eq!(sha256_file(&local), sha256_file(&image));
}

#[test]
fn password_session_writes_and_logs() {
    let scene = Scene::new("sftpe2ec", "internal-sftp -l INFO");
    let server = scene.start();
    let src = tempfile::NamedTempFile::new().expect("tmp");
    fs::write(src.path(), pseudo_random(100_000, 1)).expect("write");
    let u = scene.user.name.clone();
    let batch = format!(
        "cd /upload\nmkdir newdir\nput {} small.bin\nchmod 600 small.bin\n\
         rename small.bin newdir/renamed.bin\nls -l newdir\n-get /nonexistent.bin /dev/null\n\
         rm newdir/renamed.bin\nrmdir newdir\n-mkdir /images/forbidden\n",
        src.path().display()
    );
    let out = sftp_batch(server.addr(), &u, Login::Password(PASSWORD), &batch, &[]);
    assert_served(&out, &server, "sftp password batch");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("renamed.bin"),
        "{}",
        describe(&out)
    );
    server.wait_for_line(&format!(
        "session closed for local user {u} from [127.0.0.1]"
    ));
    let lines = server.log().lines();
    assert!(
        lines.iter().any(|l| l
            .starts_with(&format!("Accepted password for {u} from 127.0.0.1 port "))
            && l.ends_with(" ssh2")),
        "{lines:#?}"
    );
    assert_eq!(
        session_lines(&lines, &u),
        [
            format!("session opened for local user {u} from [127.0.0.1]"),
            "mkdir name \"/upload/newdir\" mode 0777".to_owned(),
            "sent status No such file".to_owned(),
            "open \"/upload/small.bin\" flags WRITE,CREATE,TRUNCATE mode 0600".to_owned(),
            "close \"/upload/small.bin\" bytes read 0 written 100000".to_owned(),
            "set \"/upload/small.bin\" mode 0600".to_owned(),
            "posix-rename old \"/upload/small.bin\" new \"/upload/newdir/renamed.bin\"".to_owned(),
            "opendir \"/upload/newdir/\"".to_owned(),
            "closedir \"/upload/newdir/\"".to_owned(),
            "sent status No such file".to_owned(),
            "remove name \"/upload/newdir/renamed.bin\"".to_owned(),
            "rmdir name \"/upload/newdir\"".to_owned(),
            "mkdir name \"/images/forbidden\" mode 0777".to_owned(),
            "sent status Permission denied".to_owned(),
            format!("session closed for local user {u} from [127.0.0.1]"),
        ]
    );
    assert!(!scene.jail.path().join("upload/newdir").exists());
    assert!(!scene.jail.path().join("images/forbidden").exists());
}

#[test]
fn failures_are_logged_as_sshd_logs_them() {
    let scene = Scene::new("sftpe2ed", "internal-sftp");
    let server = scene.start();
    let u = scene.user.name.clone();
    let out = sftp_batch(
        server.addr(),
        &u,
        Login::Password("wrong"),
        "pwd\n",
        &["-o", "NumberOfPasswordPrompts=1"],
    );
    assert!(!out.status.success(), "wrong password accepted");
    server
        .log()
        .wait_for_log("Failed password", CLIENT_TIMEOUT, |l| {
            l.starts_with(&format!("Failed password for {u} from 127.0.0.1 port "))
                && l.ends_with(" ssh2")
        });
    server
        .log()
        .wait_for_log("closed by authenticating user", CLIENT_TIMEOUT, |l| {
            l.starts_with(&format!(
                "Connection closed by authenticating user {u} 127.0.0.1 port "
            )) && l.ends_with(" [preauth]")
        });
    let out = sftp_batch(
        server.addr(),
        "nosuchuser",
        Login::Password("x"),
        "pwd\n",
        &["-o", "NumberOfPasswordPrompts=1"],
    );
    assert!(!out.status.success());
    server
        .log()
        .wait_for_log("Invalid user", CLIENT_TIMEOUT, |l| {
            l.starts_with("Invalid user nosuchuser from 127.0.0.1 port ")
        });
    server
        .log()
        .wait_for_log("Failed password for invalid user", CLIENT_TIMEOUT, |l| {
            l.starts_with("Failed password for invalid user nosuchuser from 127.0.0.1 port ")
        });
    // A shell is refused with sshd's words.
    let out = run_with_timeout(
        key_command("ssh", &scene.key.private)
            .args(["-p", &server.addr().port().to_string()])
            .arg(format!("{u}@127.0.0.1"))
            .arg("cat /etc/shadow"),
        CLIENT_TIMEOUT,
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("This service allows sftp connections only."),
        "{}",
        describe(&out)
    );
    server
        .log()
        .wait_for_log("refusing non-sftp session", CLIENT_TIMEOUT, |l| {
            l.starts_with("Connection from 127.0.0.1 port ")
                && l.ends_with(": refusing non-sftp session")
        });
}

#[test]
fn escapes_stay_inside_the_jail() {
    let scene = Scene::new("sftpe2ee", "internal-sftp");
    scene.image("apig8", 1000, 3);
    // Planted by someone with write access inside the jail: links pointing out.
    std::os::unix::fs::symlink("/etc", scene.jail.path().join("upload/etc-link")).expect("symlink");
    std::os::unix::fs::symlink(
        "../../../../../../etc/shadow",
        scene.jail.path().join("upload/shadow"),
    )
    .expect("symlink");
    let server = scene.start();
    let out_dir = tempfile::tempdir().expect("tempdir");
    let d = out_dir.path().display();
    for remote in [
        "../../../../etc/shadow",
        "/etc/shadow",
        "/upload/etc-link/shadow",
        "/upload/shadow",
        "/../../etc/passwd",
    ] {
        let out = sftp_batch(
            server.addr(),
            &scene.user.name,
            Login::Key(&scene.key.private),
            &format!("get {remote} {d}/got\n"),
            &[],
        );
        assert!(
            !out.status.success(),
            "{remote} was served: {}",
            describe(&out)
        );
        assert!(!out_dir.path().join("got").exists(), "{remote} was written");
    }
    // `..` from the root is the root: the jail's own listing.
    let out = sftp_batch(
        server.addr(),
        &scene.user.name,
        Login::Key(&scene.key.private),
        "cd /../..\npwd\nls\n",
        &[],
    );
    assert_served(&out, &server, "ls /..");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Remote working directory: /\n"), "{text}");
    assert!(text.contains("images") && text.contains("upload"), "{text}");
    // A symlink created through SFTP pointing out is not followed either.
    let out = sftp_batch(
        server.addr(),
        &scene.user.name,
        Login::Key(&scene.key.private),
        &format!("ln -s /etc/passwd /upload/pw\nget /upload/pw {d}/pw\n"),
        &[],
    );
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(!out_dir.path().join("pw").exists());
}

#[test]
fn read_only_refuses_writes_and_scp_curl_paramiko_download() {
    let scene = Scene::new("sftpe2ef", "internal-sftp -R -l VERBOSE");
    let image = scene.image("ap3g3", 5_915_648, 33);
    let server = scene.start();
    let u = scene.user.name.clone();
    let src = tempfile::NamedTempFile::new().expect("tmp");
    fs::write(src.path(), b"nope").expect("write");
    let out = sftp_batch(
        server.addr(),
        &u,
        Login::Key(&scene.key.private),
        &format!("put {} /upload/x\n", src.path().display()),
        &[],
    );
    assert!(
        !out.status.success(),
        "-R allowed a write: {}",
        describe(&out)
    );
    assert!(!scene.jail.path().join("upload/x").exists());
    server.wait_for_line("Refusing open request in read-only mode");

    let out_dir = tempfile::tempdir().expect("tempdir");
    let port = server.addr().port().to_string();
    // scp (SFTP mode, OpenSSH 9's default).
    let scp_dst = out_dir.path().join("scp.bin");
    let out = run_with_timeout(
        key_command("scp", &scene.key.private)
            .arg("-q")
            .args(["-P", &port])
            .arg(format!("{u}@127.0.0.1:/images/ap3g3"))
            .arg(&scp_dst),
        CLIENT_TIMEOUT,
    );
    assert_served(&out, &server, "scp");
    assert_eq!(sha256_file(&scp_dst), sha256_file(&image));
    // curl (libssh2), password.
    let curl_dst = out_dir.path().join("curl.bin");
    let out = run_with_timeout(
        Command::new("curl")
            .args(["-sS", "--insecure", "--user", &format!("{u}:{PASSWORD}")])
            .arg(format!("sftp://127.0.0.1:{port}/images/ap3g3"))
            .arg("-o")
            .arg(&curl_dst),
        CLIENT_TIMEOUT,
    );
    assert_served(&out, &server, "curl sftp://");
    assert_eq!(sha256_file(&curl_dst), sha256_file(&image));
    // paramiko with prefetch (thousands of reads in flight).
    let py_dst = out_dir.path().join("paramiko.bin");
    let script = format!(
        "import paramiko\n\
         t = paramiko.Transport(('127.0.0.1', {port}))\n\
         t.connect(username='{u}', password='{PASSWORD}')\n\
         s = paramiko.SFTPClient.from_transport(t)\n\
         s.get('/images/ap3g3', '{dst}', prefetch=True)\n\
         print(sorted(s.listdir('/images')))\n\
         t.close()\n",
        dst = py_dst.display()
    );
    let out = run_with_stdin(
        {
            let mut c = Command::new("/usr/bin/python3");
            c.arg("-");
            c
        },
        script.as_bytes(),
    );
    assert_served(&out, &server, "paramiko");
    assert_eq!(sha256_file(&py_dst), sha256_file(&image));
}

#[test]
fn bad_chroot_ownership_is_refused_with_the_fix() {
    let scene = Scene::new("sftpe2eg", "internal-sftp");
    airlift_tests::chmod(scene.jail.path(), 0o775);
    let server = scene.start();
    let out = sftp_batch(
        server.addr(),
        &scene.user.name,
        Login::Key(&scene.key.private),
        "pwd\n",
        &[],
    );
    assert!(!out.status.success());
    let jail = scene.jail.path().display().to_string();
    server.wait_for_line(&format!(
        "bad ownership or modes for chroot directory \"{jail}\""
    ));
    server.wait_for_line(&format!("to fix it, run: chmod go-w '{jail}'"));
}

#[test]
fn test_mode_loads_the_documents_config() {
    let scene = Scene::new("sftpe2eh", "internal-sftp");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("sshd_config");
    fs::write(&cfg, &scene.config).expect("write");
    let key = dir.path().join("hostkey");
    let out = run_with_timeout(
        Command::new(BIN)
            .arg("-t")
            .arg("-f")
            .arg(&cfg)
            .arg("-h")
            .arg(&key),
        CLIENT_TIMEOUT,
    );
    assert_ok(&out, "sftpd -t");
    assert!(
        !Path::new(&key).exists(),
        "-t changes nothing (sshd -t neither)"
    );
    // AuthenticationMethods would be looser if ignored: refused, with the line.
    let strict = dir.path().join("strict_config");
    fs::write(&strict, "Port 22\nAuthenticationMethods publickey\n").expect("write");
    let out = run_with_timeout(
        Command::new(BIN)
            .arg("-t")
            .arg("-f")
            .arg(&strict)
            .arg("-h")
            .arg(&key),
        CLIENT_TIMEOUT,
    );
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("line 2: AuthenticationMethods is not supported"),
        "{}",
        describe(&out)
    );
    let bad = dir.path().join("bad_config");
    fs::write(&bad, "Port 22\nNoSuchKeyword yes\n").expect("write");
    let out = run_with_timeout(
        Command::new(BIN)
            .arg("-t")
            .arg("-f")
            .arg(&bad)
            .arg("-h")
            .arg(&key),
        CLIENT_TIMEOUT,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 2") && err.contains("NoSuchKeyword"),
        "{err}"
    );
}
