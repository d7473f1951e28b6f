//! Other WAL histories for the tests of what survives them: a cold copy of
//! a cluster's data directory restored over it later (a restored backup),
//! and a physical standby that can be promoted (a failover).

use std::fs;

use super::options::conf_line;
use super::server_user::give_to;
use super::template::temp_dir;
use super::{Cluster, ClusterError, PASSWORD, SUPERUSER, copy_dir, io_error, lock};

/// A cold copy of a cluster's data directory, taken while it was stopped.
pub struct DataCopy {
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Stops the server, copies its data directory and starts it again: a
    /// cold backup, consistent without any WAL replay.
    pub fn cold_copy(&mut self) -> Result<DataCopy, ClusterError> {
        self.stop()?;
        let dir = temp_dir("copy")?;
        give_to(dir.path(), self.user)?;
        let copied = copy_dir(&self.data_dir(), &dir.path().join("data"));
        self.start_again()?;
        copied?;
        Ok(DataCopy { dir })
    }

    /// Stops the server, replaces its data directory with `copy` and starts
    /// it on the same port: "the database was restored from a backup".
    pub fn restore(&mut self, copy: &DataCopy) -> Result<(), ClusterError> {
        self.stop()?;
        let data = self.data_dir();
        fs::remove_dir_all(&data).map_err(io_error(format!("remove {}", data.display())))?;
        copy_dir(&copy.dir.path().join("data"), &data)?;
        self.start_again()
    }

    /// A physical standby of this cluster on a port of its own, made from a
    /// cold copy of the data directory and streaming from this server.
    /// `SELECT pg_promote()` on it is a failover.
    pub fn start_standby(&mut self) -> Result<Cluster, ClusterError> {
        self.start_standby_with(&[])
    }

    /// [`Self::start_standby`] with postgresql.conf `settings` of its own,
    /// e.g. those of slot synchronisation (`sync_replication_slots`, ...).
    /// Its `primary_conninfo` names a database, as synchronisation needs.
    pub fn start_standby_with(
        &mut self,
        settings: &[(&str, &str)],
    ) -> Result<Cluster, ClusterError> {
        self.stop()?;
        let dir = temp_dir("standby")?;
        give_to(dir.path(), self.user)?;
        let mut standby = Cluster {
            dir,
            bins: self.bins.clone(),
            user: self.user,
            port: 0,
            postmaster: std::sync::Mutex::new(None),
        };
        let copied = copy_dir(&self.data_dir(), &standby.data_dir());
        self.start_again()?;
        copied?;
        let signal = standby.data_dir().join("standby.signal");
        fs::write(&signal, "").map_err(io_error("write standby.signal"))?;
        give_to(&signal, self.user)?;
        let conninfo = format!(
            "host=127.0.0.1 port={} user={SUPERUSER} password={PASSWORD} application_name=standby dbname=postgres",
            self.port
        );
        // Only what differs: a standby refuses to start with lower limits
        // (max_wal_senders, ...) than its primary's.
        let socket_dir = standby.socket_dir();
        let mut config = String::from("\n# leadhook throwaway standby\n");
        for (name, value) in [
            ("unix_socket_directories", socket_dir.as_str()),
            ("primary_conninfo", conninfo.as_str()),
            ("hot_standby", "on"),
        ]
        .into_iter()
        .chain(settings.iter().copied())
        {
            config.push_str(&conf_line(name, value)?);
        }
        let path = standby.data_dir().join("postgresql.conf");
        fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut file| std::io::Write::write_all(&mut file, config.as_bytes()))
            .map_err(io_error(format!("write {}", path.display())))?;
        standby.launch_on_free_port()?;
        Ok(standby)
    }

    /// Whether the server is running.
    pub fn is_running(&self) -> bool {
        lock(&self.postmaster).is_some()
    }
}
