# A facegate cluster on Chameleon Cloud: one compute_skylake node (kubeadm control plane, CPU serving pool, data
# volume) and gpu_v100 workers, each placed into its Blazar reservation through the `reservation` scheduler hint.
# Only the operators' CIDRs reach SSH and the Kubernetes API; kiosks reach HTTPS on the control plane's ingress.

data "openstack_networking_network_v2" "external" {
  name = var.external_network
}

resource "openstack_networking_network_v2" "cluster" {
  name           = "${var.name_prefix}-net"
  admin_state_up = true
}

resource "openstack_networking_subnet_v2" "cluster" {
  name            = "${var.name_prefix}-subnet"
  network_id      = openstack_networking_network_v2.cluster.id
  cidr            = var.subnet_cidr
  ip_version      = 4
  dns_nameservers = var.dns_nameservers
}

resource "openstack_networking_router_v2" "cluster" {
  name                = "${var.name_prefix}-router"
  admin_state_up      = true
  external_network_id = data.openstack_networking_network_v2.external.id
}

resource "openstack_networking_router_interface_v2" "cluster" {
  router_id = openstack_networking_router_v2.cluster.id
  subnet_id = openstack_networking_subnet_v2.cluster.id
}

# --- Security groups: nothing is open to 0.0.0.0/0 (the variables reject /0). ---

resource "openstack_networking_secgroup_v2" "cluster" {
  name        = "${var.name_prefix}-cluster"
  description = "facegate nodes: intra-cluster traffic, SSH and the Kubernetes API from the admin CIDRs"
}

# Node-to-node traffic (kubelet, CNI overlay, etcd, NodePorts) stays among members of this group.
resource "openstack_networking_secgroup_rule_v2" "intra_cluster" {
  for_each          = toset(["tcp", "udp", "icmp"])
  direction         = "ingress"
  ethertype         = "IPv4"
  protocol          = each.value
  remote_group_id   = openstack_networking_secgroup_v2.cluster.id
  security_group_id = openstack_networking_secgroup_v2.cluster.id
}

# Pod-to-pod traffic is encapsulated by the CNI but pod CIDR source addresses can appear on the wire.
resource "openstack_networking_secgroup_rule_v2" "pod_network" {
  direction         = "ingress"
  ethertype         = "IPv4"
  remote_ip_prefix  = var.pod_cidr
  security_group_id = openstack_networking_secgroup_v2.cluster.id
}

# SSH (Ansible, operators) and the Kubernetes API, each from each admin CIDR.
resource "openstack_networking_secgroup_rule_v2" "admin" {
  for_each = {
    for pair in setproduct(var.admin_cidrs, [22, 6443]) : "${pair[1]}-${pair[0]}" => { cidr = pair[0], port = pair[1] }
  }
  direction         = "ingress"
  ethertype         = "IPv4"
  protocol          = "tcp"
  port_range_min    = each.value.port
  port_range_max    = each.value.port
  remote_ip_prefix  = each.value.cidr
  security_group_id = openstack_networking_secgroup_v2.cluster.id
}

resource "openstack_networking_secgroup_v2" "ingress" {
  name        = "${var.name_prefix}-ingress"
  description = "facegate ingress (Kourier) on the control plane: HTTPS from the kiosk CIDRs only"
}

resource "openstack_networking_secgroup_rule_v2" "kiosk_https" {
  for_each          = toset(var.kiosk_cidrs)
  direction         = "ingress"
  ethertype         = "IPv4"
  protocol          = "tcp"
  port_range_min    = 443
  port_range_max    = 443
  remote_ip_prefix  = each.value
  security_group_id = openstack_networking_secgroup_v2.ingress.id
}

# --- Ports, nodes, floating IPs ---

resource "openstack_networking_port_v2" "control_plane" {
  name                  = "${var.name_prefix}-cp-0"
  network_id            = openstack_networking_network_v2.cluster.id
  admin_state_up        = true
  port_security_enabled = true
  security_group_ids = [
    openstack_networking_secgroup_v2.cluster.id,
    openstack_networking_secgroup_v2.ingress.id,
  ]

  fixed_ip {
    subnet_id = openstack_networking_subnet_v2.cluster.id
  }
}

resource "openstack_networking_port_v2" "gpu_worker" {
  count                 = var.gpu_worker_count
  name                  = "${var.name_prefix}-gpu-${count.index}"
  network_id            = openstack_networking_network_v2.cluster.id
  admin_state_up        = true
  port_security_enabled = true
  security_group_ids    = [openstack_networking_secgroup_v2.cluster.id]

  fixed_ip {
    subnet_id = openstack_networking_subnet_v2.cluster.id
  }
}

resource "openstack_compute_instance_v2" "control_plane" {
  name        = "${var.name_prefix}-cp-0"
  image_name  = var.image_name
  flavor_name = "baremetal"
  key_pair    = var.key_pair

  network {
    port = openstack_networking_port_v2.control_plane.id
  }

  # Blazar: the node comes out of the compute_skylake lease.
  scheduler_hints {
    additional_properties = {
      reservation = var.skylake_reservation_id
    }
  }

  metadata = {
    cluster   = var.name_prefix
    node_pool = "cpu"
  }

  depends_on = [openstack_networking_router_interface_v2.cluster]
}

resource "openstack_compute_instance_v2" "gpu_worker" {
  count       = var.gpu_worker_count
  name        = "${var.name_prefix}-gpu-${count.index}"
  image_name  = var.gpu_image_name
  flavor_name = "baremetal"
  key_pair    = var.key_pair

  network {
    port = openstack_networking_port_v2.gpu_worker[count.index].id
  }

  # Blazar: the node comes out of the gpu_v100 lease.
  scheduler_hints {
    additional_properties = {
      reservation = var.gpu_reservation_id
    }
  }

  metadata = {
    cluster   = var.name_prefix
    node_pool = "gpu-v100"
  }

  depends_on = [openstack_networking_router_interface_v2.cluster]
}

resource "openstack_networking_floatingip_v2" "control_plane" {
  pool        = var.external_network
  port_id     = openstack_networking_port_v2.control_plane.id
  description = "${var.name_prefix} control plane and ingress"
  depends_on  = [openstack_networking_router_interface_v2.cluster]
}

# Workers get floating IPs for Ansible over SSH (still only from admin_cidrs); nothing else is exposed on them.
resource "openstack_networking_floatingip_v2" "gpu_worker" {
  count       = var.gpu_worker_count
  pool        = var.external_network
  port_id     = openstack_networking_port_v2.gpu_worker[count.index].id
  description = "${var.name_prefix} GPU worker ${count.index}"
  depends_on  = [openstack_networking_router_interface_v2.cluster]
}

# --- Storage ---

# PostgreSQL and MinIO data outlive node re-provisioning: Ansible mounts this volume on the control plane.
resource "openstack_blockstorage_volume_v3" "data" {
  name        = "${var.name_prefix}-data"
  size        = var.data_volume_size_gb
  description = "facegate PostgreSQL and MinIO data"
}

resource "openstack_compute_volume_attach_v2" "data" {
  instance_id = openstack_compute_instance_v2.control_plane.id
  volume_id   = openstack_blockstorage_volume_v3.data.id
}

resource "openstack_objectstorage_container_v1" "artifacts" {
  name = var.object_container

  versioning_legacy {
    type     = "versions"
    location = "${var.object_container}-versions"
  }
}

resource "openstack_objectstorage_container_v1" "artifacts_versions" {
  name = "${var.object_container}-versions"
}

# --- The Ansible inventory ---

module "inventory" {
  source = "../modules/inventory"

  control_plane = {
    name       = openstack_compute_instance_v2.control_plane.name
    public_ip  = openstack_networking_floatingip_v2.control_plane.address
    private_ip = openstack_networking_port_v2.control_plane.all_fixed_ips[0]
  }

  gpu_workers = [for i in range(var.gpu_worker_count) : {
    name       = openstack_compute_instance_v2.gpu_worker[i].name
    public_ip  = openstack_networking_floatingip_v2.gpu_worker[i].address
    private_ip = openstack_networking_port_v2.gpu_worker[i].all_fixed_ips[0]
  }]

  pod_cidr = var.pod_cidr
  extra_vars = {
    object_container = openstack_objectstorage_container_v1.artifacts.name
    data_volume_id   = openstack_blockstorage_volume_v3.data.id
  }
}
