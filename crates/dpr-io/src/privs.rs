//! Dropping root after setup.
//!
//! After the TUN device is open and the host is set up, the daemon needs
//! only `CAP_NET_ADMIN`: to change its addresses and rules on a reload, to
//! undo its setup on exit (netlink), and to restore the `net.*` sysctls
//! (the kernel grants write access to a netns's `net.*` sysctls to holders
//! of `CAP_NET_ADMIN` in it). The TUN queues are already-open descriptors;
//! the control port (6870) and the metrics port need no capability when
//! above 1023. Everything else is dropped, and `no_new_privs` is set.

use crate::sys;
use std::io;

/// A user to run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Account {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
}

/// Looks `name` up in `passwd` text (the format of `/etc/passwd`); a
/// number is taken as a uid with the same gid.
pub fn lookup_in(passwd: &str, name: &str) -> Option<Account> {
    if let Ok(uid) = name.parse::<u32>() {
        return Some(Account { uid, gid: uid });
    }
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let n = f.next()?;
        let _pw = f.next()?;
        let uid = f.next()?.parse().ok()?;
        let gid = f.next()?.parse().ok()?;
        (n == name).then_some(Account { uid, gid })
    })
}

/// Looks a user up in `/etc/passwd`.
pub fn lookup(name: &str) -> io::Result<Account> {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    lookup_in(&passwd, name).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("user {name:?} not found in /etc/passwd"),
        )
    })
}

/// Becomes `who`, keeping only `CAP_NET_ADMIN`.
pub fn drop_to(who: Account) -> io::Result<()> {
    sys::drop_to_user(who.uid, who.gid, &[sys::CAP_NET_ADMIN])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_lookup() {
        let p = "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/:/usr/sbin/nologin\nbad line\n";
        assert_eq!(
            lookup_in(p, "nobody"),
            Some(Account {
                uid: 65534,
                gid: 65534
            })
        );
        assert_eq!(
            lookup_in(p, "1234"),
            Some(Account {
                uid: 1234,
                gid: 1234
            })
        );
        assert_eq!(lookup_in(p, "nosuch"), None);
    }
}
