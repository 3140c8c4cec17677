//! CPU time of processes, read from `/proc` (Linux; USER_HZ = 100).

/// Fields 14.. of `/proc/PID/stat` (utime is index 11 of what follows the command name).
fn stat_fields(pid: &str) -> Option<Vec<u64>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields start after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    Some(rest.split(' ').map(|f| f.parse().unwrap_or(0)).collect())
}

/// User + system CPU of process `pid` ("self" for this one) in microseconds.
pub(crate) fn process_us(pid: &str) -> Option<u64> {
    let f = stat_fields(pid)?;
    Some((f.get(11)? + f.get(12)?) * 10_000)
}

/// CPU of a PostgreSQL cluster in microseconds: the postmaster, its live children
/// (backends, WAL writer, checkpointer...) and the children it already reaped
/// (cutime/cstime), so backends that exit mid-measure still count.
pub(crate) fn cluster_us(postmaster: u32) -> Option<u64> {
    let f = stat_fields(&postmaster.to_string())?;
    let mut total = (f.get(11)? + f.get(12)? + f.get(13)? + f.get(14)?) * 10_000;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        // Field 4 (index 1 after the name) is the parent pid.
        if let Some(child) = stat_fields(pid)
            && child.get(1) == Some(&(postmaster as u64))
        {
            total += (child.get(11).unwrap_or(&0) + child.get(12).unwrap_or(&0)) * 10_000;
        }
    }
    Some(total)
}
