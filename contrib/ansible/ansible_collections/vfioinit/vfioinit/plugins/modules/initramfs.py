#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: vfioinit developers
# MIT License (see LICENSE in https://github.com/vfioinit/vfioinit)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: initramfs
short_description: Put the VFIO modules into a machine's initramfs with vfioinit
version_added: "0.1.0"
description:
  - Runs the installed C(vfioinit) command with C(--json) and reports what it did. Every
    decision (which generator, which modules, which files, which kernels are stale) is the
    CLI's; this module only maps options to arguments and the JSON report to a result.
  - With I(state=present) a normal run is C(vfioinit apply) (edit the generator's config,
    rebuild the stale images, verify them), or C(vfioinit apply --no-rebuild) with
    I(rebuild=false). A second run on a configured machine changes nothing and reports
    C(changed=false).
  - With I(state=absent) a run is C(vfioinit revert) (every file vfioinit changed is restored
    byte for byte, files it created are removed) followed by C(vfioinit rebuild) when something
    was reverted and I(rebuild=true).
  - Check mode runs C(vfioinit plan) (and C(vfioinit verify) when the configuration is already
    in place and I(rebuild=true), since C(apply) would then rebuild the images that fail
    verification); nothing is written. With C(--diff) the plan's unified diff is returned.
    With I(state=absent) check mode runs C(vfioinit revert --dry-run), which reports what
    revert would restore or remove (and the diff), or fails as revert would.
options:
  root:
    description: The filesystem tree to configure (C(--root)); C(/) is the running system.
    type: path
    default: /
  generators:
    description:
      - Generators to configure (C(--generator)). Default is the CLI's (the active one, else
        every installed one).
    type: list
    elements: str
    choices: [mkinitcpio, dracut, initramfs-tools, booster]
  kernels:
    description: Kernel versions to consider (C(--kernel)); default every installed kernel.
    type: list
    elements: str
  modules:
    description: Extra modules to load early besides the VFIO ones (C(--module)).
    type: list
    elements: str
  ids:
    description:
      - PCI C(vendor:device) IDs that vfio-pci must claim at boot (C(--ids)); vfioinit then
        writes C(/etc/modprobe.d/vfioinit.conf) and puts it into every image.
    type: list
    elements: str
  devices:
    description:
      - PCI addresses (C(DDDD:BB:DD.F), or C(BB:DD.F) for domain C(0000)) that vfio-pci must
        claim at boot (C(--device), once per address); for one of two identical devices, where
        I(ids) would take both. A script in the image writes C(vfio-pci) to each device's
        C(driver_override) before udev.
      - On the running system (I(root=/)) vfioinit refuses an address that is not there, a
        device whose IOMMU group holds another endpoint not passed too, and, unless I(force),
        the boot VGA device and the root disk's controller. For another I(root) nothing is
        checked.
    type: list
    elements: str
  match:
    description:
      - Choose the devices of this machine by a PCRE2 pattern over
        C(vvvv:dddd Vendor Device [Class]) (names from pci.ids) (C(--match)); the devices it
        matches are bound by address as with I(devices). Needs I(root=/). In check mode the
        result's C(matched) lists what it chose.
    type: str
  force:
    description:
      - With I(devices) or I(match) (I(state=present)), pass a device the safety rules refuse
        (the boot VGA device, the root disk's controller) (C(--force)).
      - With I(state=absent), also restore files edited since vfioinit wrote them, keeping
        their current content as C(PATH.vfioinit-edited) (C(vfioinit revert --force)); without
        it such a file makes the revert fail and change nothing.
    type: bool
    default: false
  softdeps:
    description: Write softdeps on the GPU drivers even without I(ids) (C(--softdeps)).
    type: bool
    default: false
  cmdline:
    description:
      - Also put C(intel_iommu=on iommu=pt) (and, with I(ids), C(vfio-pci.ids=)) on the kernel
        command line (C(--cmdline)), where the machine's boot path reads it, through each target
        found (targets C(grubby), C(kernelstub), C(grub), C(dracut_cmdline), C(kernel_cmdline),
        C(cmdline_d), C(refind), C(limine), C(rpm_ostree_kargs), C(ostree_kargs), C(bootc_kargs)).
        Needed where vfio-pci is built into the kernel, where I(ids) alone fail.
      - The edits are part of the plan (check mode and C(--diff) show them); I(state=absent)
        reverts them with everything else, with or without this option.
    type: bool
    default: false
  timeout:
    description:
      - Time limit in seconds of each generator run when images are rebuilt (C(--timeout));
        a run that takes longer is killed, its previous image is kept and the task fails.
      - Default is the CLI's (600).
    type: float
  rebuild:
    description:
      - Rebuild the stale images and verify them after editing (I(state=present)), or rebuild
        the images after a revert (I(state=absent)).
    type: bool
    default: true
  state:
    description: C(present) configures VFIO; C(absent) reverts every change vfioinit made.
    type: str
    choices: [present, absent]
    default: present
  executable:
    description: The vfioinit command to run (a name looked up on C(PATH), or a path).
    type: str
    default: vfioinit
requirements:
  - the C(vfioinit) CLI 0.1.0 or later on the managed host (the release rock,
    C(luarocks --lua-version=5.4 install vfioinit-0.1.0-1.src.rock), or C(cmake --install);
    see Install in https://github.com/vfioinit/vfioinit)
notes:
  - Rebuilding images in a I(root) other than C(/) chroots into it, which needs root privileges.
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
author:
  - vfioinit developers (@vfioinit)
'''

EXAMPLES = r'''
- name: VFIO modules into the initramfs, vfio-pci claims the passthrough GPU
  vfioinit.vfioinit.initramfs:
    ids:
      - "10de:1b80"
      - "10de:10f0"

- name: Configure a chroot being provisioned, without rebuilding
  vfioinit.vfioinit.initramfs:
    root: /mnt/target
    generators: [mkinitcpio]
    rebuild: false

- name: vfio-pci claims one of two identical GPUs, by its address
  vfioinit.vfioinit.initramfs:
    devices:
      - "0000:01:00.0"
      - "0000:01:00.1"

- name: vfio-pci claims every NVIDIA device of this machine
  vfioinit.vfioinit.initramfs:
    match: "^10de:"

- name: vfio-pci is built into this kernel - the ids go on the kernel command line; slow disks
  vfioinit.vfioinit.initramfs:
    ids: ["10de:1b80"]
    cmdline: true
    timeout: 1800

- name: Undo everything vfioinit changed and rebuild the images without VFIO
  vfioinit.vfioinit.initramfs:
    state: absent
'''

RETURN = r'''
changes:
  description: Files the plan changes (or changed), as reported by the CLI.
  returned: state is present
  type: list
  elements: dict
  sample: [{"generator": "mkinitcpio", "path": "/etc/mkinitcpio.conf", "new": false}]
modules:
  description: The modules vfioinit puts into the images.
  returned: state is present
  type: list
  elements: str
  sample: ["vfio", "vfio_iommu_type1", "vfio_pci"]
kernels:
  description: The kernels considered.
  returned: state is present and not check mode
  type: list
  elements: str
generators:
  description: The generators configured.
  returned: state is present and not check mode
  type: list
  elements: str
rebuilt:
  description:
    - One entry per rebuilt kernel and command, from the CLI's JSON report (C(kernel),
      C(generator), C(image), C(command), C(status), C(seconds), C(size_before), C(size_after),
      C(ok), C(error), C(missing)). Empty when every image was already up to date.
  returned: when not check mode
  type: list
  elements: dict
  sample: [{"kernel": "6.1.0-13-amd64", "generator": "initramfs-tools", "image": "/boot/initrd.img-6.1.0-13-amd64", "ok": true, "seconds": 7.2}]
verified:
  description: One entry per image read back after apply (C(kernel), C(generator), C(image), C(ok), C(missing)).
  returned: state is present and not check mode
  type: list
  elements: dict
reverted:
  description:
    - Files restored or removed by C(vfioinit revert) (C(path), C(action), C(kept)); in check
      mode, what C(vfioinit revert --dry-run) says revert would do.
  returned: state is absent
  type: list
  elements: dict
  sample: [{"path": "/etc/mkinitcpio.conf", "action": "restored"}]
images_ok:
  description: Whether every image read back after apply has every required module.
  returned: state is present and not check mode
  type: bool
images_stale:
  description:
    - Paths of images that lack the modules and were not rebuilt (I(rebuild=false)); empty when
      every image is up to date.
  returned: state is present and not check mode
  type: list
  elements: str
leftovers:
  description:
    - C(<image>.vfioinit-prev) files an interrupted earlier run left, and what apply did with
      them (C(path), C(image), C(action), C(message)).
  returned: state is present and not check mode
  type: list
  elements: dict
pending_images:
  description: In check mode, images that fail verification and that apply would rebuild.
  returned: check mode, state is present, rebuild is true
  type: list
  elements: dict
diff_text:
  description: The unified diff of the plan (paths relative to root).
  returned: state is present
  type: str
devices:
  description: The PCI addresses bound by address (from I(devices) and I(match)), as the plan lists them.
  returned: check mode, state is present
  type: list
  elements: str
  sample: ["0000:01:00.0"]
matched:
  description: The devices I(match) chose (C(address), C(description)).
  returned: check mode, state is present, match is given
  type: list
  elements: dict
  sample: [{"address": "0000:01:00.0", "description": "10de:1b80 NVIDIA Corporation GP104 [GeForce GTX 1080] [0300]"}]
cmdline:
  description:
    - With I(cmdline), the kernel command line read back after apply, one entry per kernel and boot
      entry (C(kernel), C(target), C(entry), C(source), C(cmdline), C(ok), C(missing)).
  returned: state is present, cmdline is true and not check mode
  type: list
  elements: dict
regenerated:
  description:
    - With I(cmdline), each command that regenerated the boot loader's configuration (C(target),
      C(command), C(status), C(seconds), C(ok), C(error)).
  returned: state is present, cmdline is true and not check mode
  type: list
  elements: dict
warnings_cli:
  description: Warnings the CLI attached to the plan.
  returned: state is present
  type: list
  elements: str
cmd:
  description: The last vfioinit command line run.
  returned: always
  type: list
  elements: str
'''

import json

from ansible.module_utils.basic import AnsibleModule


def base_args(module):
    p = module.params
    exe = p['executable']
    if '/' not in exe:
        found = module.get_bin_path(exe)
        if not found:
            module.fail_json(msg='vfioinit: command %r not found on PATH (set executable)' % exe)
        exe = found
    args = [exe, '--json', '--root', p['root']]
    for g in p['generators'] or []:
        args += ['--generator', g]
    for k in p['kernels'] or []:
        args += ['--kernel', k]
    for m in p['modules'] or []:
        args += ['--module', m]
    if p['ids']:
        args += ['--ids', ','.join(p['ids'])]
    for d in p['devices'] or []:
        args += ['--device', d]
    if p['match'] is not None:
        args += ['--match', p['match']]
    if p['softdeps']:
        args.append('--softdeps')
    # the CLI refuses an option its command does not take: --force only beside devices
    if p['force'] and (p['devices'] or p['match'] is not None):
        args.append('--force')
    return args


def timeout_args(module):
    """--timeout for the commands that run generators (apply, rebuild)."""
    t = module.params['timeout']
    if t is None:
        return []
    return ['--timeout', str(int(t)) if float(t).is_integer() else repr(t)]


def cmdline_args(module):
    """--cmdline for the commands that plan (plan, apply)."""
    return ['--cmdline'] if module.params['cmdline'] else []


def select_args(module):
    """root, generators and kernels: what rebuild and verify take."""
    p = module.params
    args = base_args(module)[:4]
    for g in p['generators'] or []:
        args += ['--generator', g]
    for k in p['kernels'] or []:
        args += ['--kernel', k]
    return args


def run(module, result, args, ok_codes=(0,)):
    """Run the CLI, parse its one JSON object; fail with the CLI's message on error."""
    result['cmd'] = args
    rc, out, err = module.run_command(args, check_rc=False)
    data = None
    try:
        data = json.loads(out) if out.strip() else None
    except ValueError:
        data = None
    if data is None or not isinstance(data, dict):
        lines = [l for l in (err or '').splitlines() if l.strip()]
        msg = lines[-1] if lines else 'vfioinit exited with status %d and printed no JSON' % rc
        module.fail_json(msg=msg, rc=rc, stdout=out, stderr=err, **result)
    error = data.get('error')
    if error is None and isinstance(data.get('report'), dict):
        error = data['report'].get('error')
    # exit 2 is not an error (plan: changes pending; verify: an image lacks a module, ok=false)
    if rc not in ok_codes or (data.get('ok') is False and error):
        msg = 'vfioinit: %s' % error if error else 'vfioinit exited with status %d' % rc
        for key in ('rebuilt', 'verified', 'changes'):
            if key in data:
                result[key] = data[key]
        if isinstance(data.get('report'), dict):
            result['rebuilt'] = rebuilt_of(data['report'])
        module.fail_json(msg=msg, rc=rc, stderr=err, **result)
    return rc, data


def rebuilt_of(report):
    # vfioinit's rebuild report lists its entries under 'rebuilt' (before: 'kernels')
    return report.get('rebuilt', report.get('kernels', []))


def diff_of(text):
    return {'prepared': text} if text else None


def present(module, result):
    p = module.params
    args = base_args(module)
    if module.check_mode:
        _, plan = run(module, result, args + cmdline_args(module) + ['plan'], ok_codes=(0, 2))
        result['changes'] = plan.get('changes', [])
        result['modules'] = plan.get('modules', [])
        result['diff_text'] = plan.get('diff', '')
        result['warnings_cli'] = plan.get('warnings', [])
        result['devices'] = plan.get('devices') or []
        if p['match'] is not None:
            result['matched'] = plan.get('matched') or []
        changed = bool(plan.get('pending'))
        if not changed and p['rebuild']:
            # configured already: apply would still rebuild images that fail verification
            verify = select_args(module)
            for m in p['modules'] or []:
                verify += ['--module', m]
            _, ver = run(module, result, verify + ['verify'], ok_codes=(0, 2))
            result['pending_images'] = [i for i in ver.get('images', []) if not i.get('ok')]
            changed = bool(result['pending_images'])
        result['changed'] = changed
    else:
        cmd = args + cmdline_args(module) + timeout_args(module) + ['apply'] + ([] if p['rebuild'] else ['--no-rebuild'])
        _, rep = run(module, result, cmd)
        for key in ('changes', 'modules', 'kernels', 'generators', 'rebuilt', 'verified',
                    'images_stale', 'leftovers'):
            result[key] = rep.get(key, [])
        if p['cmdline']:
            result['cmdline'] = rep.get('cmdline', [])
            result['regenerated'] = rep.get('regenerated', [])
        result['diff_text'] = rep.get('diff', '')
        result['warnings_cli'] = rep.get('warnings', [])
        result['images_ok'] = bool(rep.get('images_ok'))
        result['changed'] = bool(result['changes']) or bool(result['rebuilt'])
    for w in result['warnings_cli']:
        module.warn('vfioinit: %s' % w)
    if module._diff and result['diff_text']:
        result['diff'] = diff_of(result['diff_text'])


def reverted_of(data):
    return [e for e in data.get('reverted', []) if e.get('action') != 'unchanged']


def absent(module, result):
    """revert (check mode: revert --dry-run, which refuses exactly as revert would)."""
    p = module.params
    head = base_args(module)[:4] + (['--force'] if p['force'] else [])
    preview = None
    if module.check_mode or module._diff:
        _, preview = run(module, result, head + ['revert', '--dry-run'])
    if module.check_mode:
        result['reverted'] = reverted_of(preview)
        result['changed'] = bool(result['reverted'])
    else:
        _, rev = run(module, result, head + ['revert'])
        result['reverted'] = reverted_of(rev)
        result['changed'] = bool(result['reverted'])
        result['rebuilt'] = []
        if result['changed'] and p['rebuild']:
            _, reb = run(module, result, select_args(module) + timeout_args(module) + ['rebuild'])
            result['rebuilt'] = rebuilt_of(reb.get('report') or {})
    if module._diff and preview and preview.get('diff'):
        result['diff'] = diff_of(preview['diff'])


def main():
    module = AnsibleModule(
        argument_spec=dict(
            root=dict(type='path', default='/'),
            # the CLI's generator registry (require("vfioinit").generator_names()); a spec
            # (spec/55-registry_names_spec.lua) fails when the two differ
            generators=dict(type='list', elements='str',
                            choices=['mkinitcpio', 'dracut', 'initramfs-tools', 'booster']),
            kernels=dict(type='list', elements='str'),
            modules=dict(type='list', elements='str'),
            ids=dict(type='list', elements='str'),
            devices=dict(type='list', elements='str'),
            match=dict(type='str'),
            force=dict(type='bool', default=False),
            softdeps=dict(type='bool', default=False),
            cmdline=dict(type='bool', default=False),
            timeout=dict(type='float'),
            rebuild=dict(type='bool', default=True),
            state=dict(type='str', default='present', choices=['present', 'absent']),
            executable=dict(type='str', default='vfioinit'),
        ),
        supports_check_mode=True,
    )
    result = dict(changed=False)
    if module.params['state'] == 'present':
        present(module, result)
    else:
        absent(module, result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
