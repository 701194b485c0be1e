//! Kubelet paths: which pod and CSI volume a mount point belongs to.

use std::path::Path;

/// `pods/<uid>/volumes/kubernetes.io~csi/<volume>/mount` in a mount point: (uid, volume).
pub fn kubelet_csi_volume(mount_point: &Path) -> Option<(String, String)> {
    let parts: Vec<&str> = mount_point
        .to_str()?
        .split('/')
        .filter(|p| !p.is_empty())
        .collect();
    let i = parts.iter().position(|p| *p == "kubernetes.io~csi")?;
    if i < 3 || parts[i - 1] != "volumes" || parts[i - 3] != "pods" {
        return None;
    }
    let volume = parts.get(i + 1)?;
    Some((parts[i - 2].to_string(), volume.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_csi_paths_name_pod_and_volume() {
        let p = Path::new("/data/kubernetes/kubelet/pods/92f2591b-66b5-4843-b7a7-42d0acd2be07/volumes/kubernetes.io~csi/dashboard-folder/mount");
        assert_eq!(
            kubelet_csi_volume(p),
            Some((
                "92f2591b-66b5-4843-b7a7-42d0acd2be07".into(),
                "dashboard-folder".into()
            ))
        );
        assert_eq!(
            kubelet_csi_volume(Path::new(
                "/var/lib/kubelet/pods/x/volumes/kubernetes.io~empty-dir/v"
            )),
            None
        );
        assert_eq!(
            kubelet_csi_volume(Path::new("/mnt/kubernetes.io~csi/v")),
            None
        );
    }
}
