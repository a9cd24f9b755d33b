# `terraform test` for the inventory module: runs without any provider.

variables {
  control_plane = { name = "fg-cp-0", public_ip = "192.5.87.10", private_ip = "10.56.0.10" }
  gpu_workers = [
    { name = "fg-gpu-0", public_ip = "192.5.87.11", private_ip = "10.56.0.11" },
    { name = "fg-gpu-1", public_ip = "192.5.87.12", private_ip = "10.56.0.12" },
  ]
  extra_vars = { object_container = "facegate" }
}

run "groups_and_pools" {
  command = apply

  assert {
    condition     = keys(yamldecode(output.inventory).all.children.control_plane.hosts) == ["fg-cp-0"]
    error_message = "the control plane group must hold exactly the control-plane node"
  }

  assert {
    condition     = keys(yamldecode(output.inventory).all.children.gpu_workers.hosts) == ["fg-gpu-0", "fg-gpu-1"]
    error_message = "every GPU worker must be in gpu_workers"
  }

  assert {
    condition     = yamldecode(output.inventory).all.children.gpu_workers.hosts["fg-gpu-1"].node_pool == "gpu-v100"
    error_message = "GPU workers must be labelled for the gpu-v100 pool"
  }

  assert {
    condition     = yamldecode(output.inventory).all.children.control_plane.hosts["fg-cp-0"].ansible_host == "192.5.87.10"
    error_message = "Ansible must reach nodes on their floating IP"
  }

  assert {
    condition     = yamldecode(output.inventory).all.vars.control_plane_address == "10.56.0.10"
    error_message = "workers must join the control plane on its private address"
  }

  assert {
    condition     = yamldecode(output.inventory).all.vars.object_container == "facegate"
    error_message = "extra_vars must reach all hosts"
  }
}

run "no_gpu_workers" {
  command = apply

  variables {
    gpu_workers = []
  }

  assert {
    condition     = length(yamldecode(output.inventory).all.children.gpu_workers.hosts) == 0
    error_message = "a CPU-only cluster has an empty gpu_workers group"
  }
}

run "rejects_bad_address" {
  command = plan

  variables {
    gpu_workers = [{ name = "fg-gpu-0", public_ip = "192.5.87.11", private_ip = "not-an-ip" }]
  }

  expect_failures = [var.gpu_workers]
}

run "rejects_duplicate_names" {
  command = plan

  variables {
    gpu_workers = [
      { name = "fg-gpu-0", public_ip = "192.5.87.11", private_ip = "10.56.0.11" },
      { name = "fg-gpu-0", public_ip = "192.5.87.12", private_ip = "10.56.0.12" },
    ]
  }

  expect_failures = [var.gpu_workers]
}
