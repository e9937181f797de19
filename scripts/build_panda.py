"""Build ``assets/panda/panda.xml`` from PyBullet's Franka Panda URDF.

The arm is compiled by MuJoCo's own URDF parser from the ``panda.urdf`` that
ships with pybullet (``pybullet_data/franka_panda``, Apache-2.0), so MuJoCo and
the PyBullet controller stub share one kinematic tree. The compiled tree is then
written out as a clean MJCF and the parts a URDF cannot express are added:
published joint limits, gravity compensation, velocity servos, a coupled
gripper, sites and sensors. The scenes beside it (scene*.xml, workspace.xml)
are written by hand. See assets/panda/README.md.

Running the script again regenerates the committed files byte for byte:

    .venv/bin/python scripts/build_panda.py            # write assets/panda/
    .venv/bin/python scripts/build_panda.py --check    # fail if they are stale
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import mujoco
import numpy as np
import pybullet_data
from mjcf_build import fmt, render, run, site_error, sub

REPO = Path(__file__).resolve().parents[1]
SOURCE = Path(pybullet_data.getDataPath()) / "franka_panda"

ARM_JOINTS = tuple(f"panda_joint{i}" for i in range(1, 8))
FINGER_JOINTS = ("panda_finger_joint1", "panda_finger_joint2")

# Published Franka Emika Panda limits (Franka's "Control parameters" page,
# https://frankarobotics.github.io/docs/control_parameters.html); the
# URDF's ranges are rounded outwards (2.9671 instead of 2.8973).
Q_MIN = (-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973)
Q_MAX = (2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973)
DQ_MAX = (2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61)
TAU_MAX = (87.0, 87.0, 87.0, 87.0, 12.0, 12.0, 12.0)

# Velocity-servo gains (N m s/rad). kv ~ M_ii / 4 ms, with M_ii the diagonal of
# the joint-space inertia (armature included) in the ready pose
# q = (0, -0.785, 0, -2.356, 0, 1.571, 0.785): the closed
# loop's time constant is then ~4 ms, so a velocity step settles (5 tau) within
# ~20 ms whenever the torque limit does not saturate. implicitfast integrates
# the servo damping implicitly, so these gains are stable at dt = 2 ms.
KV = (600.0, 600.0, 600.0, 600.0, 180.0, 180.0, 180.0)
ARMATURE = (0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05)
DAMPING = (1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5)

# Gripper: one position servo on finger 1; finger 2 follows by an equality.
GRIPPER_KP = 500.0  # N/m
GRIPPER_KV = 20.0  # N s/m, about critical for the two 0.1 kg fingers
GRIPPER_FORCE = 20.0  # N, the URDF's finger effort
GRIPPER_OPEN = 0.04  # m per finger

# Bodies that get an AABB-centred keep-out site, and the site's name.
LINK_SITES = {
    "panda_link3": "site_link3",
    "panda_link4": "site_link4",
    "panda_link5": "site_link5",
    "panda_link6": "site_link6",
    "panda_link7": "site_link7",
    "panda_hand": "site_hand",
}
# Bodies far longer than their cross-section (the forearm is 32 cm long, the hand ~21 cm
# across its fingers, their spheres 19 and 9 cm wide) get two more spheres of the same
# radius, flush with the two ends of the box's longest axis (low end, high end): the three
# overlap and cover that axis end to end. Per body: that axis, then the two sites' names.
END_SITES = {
    "panda_link5": (2, ("site_link5_elbow", "site_link5_wrist")),  # -z is toward link4
    "panda_hand": (1, ("site_hand_right", "site_hand_left")),  # panda_leftfinger is on +y
}
# Fingers stick out of the hand 5.4 cm: a sphere of a finger's cross-section radius, flush
# with its tip (the box's +z end), guards it beside the 1 cm ee_site sphere.
FINGER_SITES = {"panda_leftfinger": "site_finger_left", "panda_rightfinger": "site_finger_right"}

MESHES = ("link0", "link1", "link2", "link3", "link4", "link5", "link6", "link7", "hand", "finger")
DARK_BODIES = ("panda_link7", "panda_leftfinger", "panda_rightfinger")


def copy_sources(out_dir: Path) -> None:
    """Copy the collision meshes (also used as visuals) and the model's licence."""
    mesh_dir = out_dir / "meshes"
    if mesh_dir.exists():
        shutil.rmtree(mesh_dir)
    mesh_dir.mkdir(parents=True)
    for name in MESHES:
        # The visual meshes weigh 9 MB; the collision ones (0.4 MB) look fine.
        text = (SOURCE / "meshes" / "collision" / f"{name}.obj").read_text()
        # Drop material references: MuJoCo ignores them and they need .mtl files.
        lines = [ln for ln in text.splitlines() if not ln.startswith(("mtllib", "usemtl"))]
        (mesh_dir / f"{name}.obj").write_text("\n".join(lines) + "\n")
    shutil.copyfile(SOURCE / "LICENSE.txt", out_dir / "LICENSE")


def compile_urdf(mesh_dir: Path) -> mujoco.MjSpec:
    """Parse the URDF with MuJoCo's URDF compiler (collision geometry only)."""
    text = (SOURCE / "panda.urdf").read_text()
    text = text.replace("package://meshes/collision/", "").replace("package://meshes/visual/", "")
    # Keep the fixed links as bodies (the default would fuse panda_hand into link7).
    extension = (
        f'<mujoco><compiler meshdir="{mesh_dir}" fusestatic="false" discardvisual="true"/></mujoco>'
    )
    text = text.replace('xmlns:xacro="http://www.ros.org/wiki/xacro">', ">" + extension, 1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "panda.urdf"
        path.write_text(text)
        spec = mujoco.MjSpec.from_file(str(path))
    spec.compile()
    return spec


def link_aabbs(spec: mujoco.MjSpec) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Centre and half-size of each body's collision mesh, in the body frame."""
    model = spec.compile()
    boxes: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for g in range(model.ngeom):
        mesh = model.geom_dataid[g]
        start, count = model.mesh_vertadr[mesh], model.mesh_vertnum[mesh]
        rot = np.zeros(9)
        mujoco.mju_quat2Mat(rot, model.geom_quat[g])
        verts = model.mesh_vert[start : start + count] @ rot.reshape(3, 3).T + model.geom_pos[g]
        lo, hi = verts.min(axis=0), verts.max(axis=0)
        boxes[model.body(model.geom_bodyid[g]).name] = ((lo + hi) / 2, (hi - lo) / 2)
    return boxes


def write_body(
    parent: ET.Element,
    body: mujoco.MjsBody,
    boxes: dict[str, tuple[np.ndarray, np.ndarray]],
    pos: np.ndarray | None = None,
) -> None:
    """Emit one body of the compiled tree and its children, with our additions."""
    name = body.name
    if name == "panda_link8":
        # Massless flange frame: attach the hand directly to link7 with the same
        # pose (link8 only translates, the hand only rotates about z).
        (hand,) = body.bodies
        assert np.all(np.asarray(body.quat) == (1, 0, 0, 0)), "panda_link8 only translates"
        write_body(parent, hand, boxes, pos=np.asarray(body.pos) + np.asarray(hand.pos))
        return
    if name == "panda_grasptarget":
        return  # massless fixed link 0.105 m along the hand's z: becomes ee_site
    elem = sub(parent, "body", name=name)
    p = np.asarray(body.pos) if pos is None else pos
    if np.any(p != 0):
        elem.set("pos", fmt(*p))
    if np.any(np.asarray(body.quat) != (1, 0, 0, 0)):
        elem.set("quat", fmt(*body.quat))
    if name == "panda_link0":
        elem.set("childclass", "panda")
    else:
        elem.set("gravcomp", "1")  # actuators do not fight gravity (no sag)
    inertia = np.asarray(body.fullinertia)
    sub(elem, "inertial", pos=fmt(*body.ipos), mass=fmt(body.mass), diaginertia=fmt(*inertia[:3]))
    assert not np.any(inertia[3:]), "the URDF's inertias are diagonal"
    for joint in body.joints:
        if joint.name in ARM_JOINTS:
            i = ARM_JOINTS.index(joint.name)
            sub(
                elem,
                "joint",
                name=joint.name,
                class_=f"arm{1 if i < 4 else 2}",
                axis=fmt(*joint.axis),
                range=fmt(Q_MIN[i], Q_MAX[i]),
            )
        else:
            sub(elem, "joint", name=joint.name, class_="finger", axis=fmt(*joint.axis))
    for geom in body.geoms:
        g = sub(elem, "geom", name=f"{name}_geom", mesh=geom.meshname)
        if name in DARK_BODIES:
            g.set("material", "panda_dark")
        if np.any(np.asarray(geom.quat) != (1, 0, 0, 0)):
            g.set("quat", fmt(*geom.quat))
    if name == "panda_hand":
        sub(elem, "site", name="wrist_site", size="0.01")  # the flange
        (target,) = [b for b in body.bodies if b.name == "panda_grasptarget"]
        assert np.all(np.asarray(target.quat) == (1, 0, 0, 0)), "grasp target is not rotated"
        sub(elem, "site", name="ee_site", pos=fmt(*target.pos), size="0.01")
    if name in LINK_SITES or name in FINGER_SITES:
        write_keepout_sites(elem, name, *boxes[name])
    for child in body.bodies:
        write_body(elem, child, boxes)


def write_keepout_sites(elem: ET.Element, name: str, centre: np.ndarray, half: np.ndarray) -> None:
    """The keep-out spheres of one body, sized from its collision mesh's bounding box."""
    # Radius: half the second-largest extent, i.e. the link's cross-section.
    radius = round(float(np.sort(half)[1]), 3)
    centre = np.round(centre, 3)
    if name in FINGER_SITES:
        tip = centre.copy()
        tip[2] = round(centre[2] + half[2] - radius, 3)
        sub(elem, "site", name=FINGER_SITES[name], pos=fmt(*tip), size=fmt(radius))
        return
    sub(elem, "site", name=LINK_SITES[name], pos=fmt(*centre), size=fmt(radius))
    if name in END_SITES:
        axis, ends = END_SITES[name]
        assert int(np.argmax(half)) == axis, f"{name}'s bounding box is longest along {axis}"
        for sign, site in zip((-1.0, 1.0), ends, strict=True):
            end = centre.copy()
            end[axis] = round(centre[axis] + sign * (half[axis] - radius), 3)
            sub(elem, "site", name=site, pos=fmt(*end), size=fmt(radius))


def build_mjcf(spec: mujoco.MjSpec) -> ET.Element:
    """The complete panda.xml element tree."""
    root = ET.Element("mujoco", model="panda")
    sub(root, "compiler", angle="radian", meshdir="meshes", autolimits="true")
    sub(root, "option", timestep="0.002", integrator="implicitfast")

    default = sub(sub(root, "default"), "default", class_="panda")
    sub(default, "geom", type="mesh", material="panda_white", friction="1 0.005 0.0001")
    sub(default, "site", group="4", rgba="1 0.5 0 0.5")
    for cls, idx in (("arm1", 0), ("arm2", 4)):
        sub(
            sub(default, "default", class_=cls),
            "joint",
            armature=fmt(ARMATURE[idx]),
            damping=fmt(DAMPING[idx]),
        )
    finger = sub(default, "default", class_="finger")
    sub(finger, "joint", type="slide", range=fmt(0, GRIPPER_OPEN), armature="0.01", damping="1")

    asset = sub(root, "asset")
    sub(asset, "material", name="panda_white", rgba="0.92 0.92 0.92 1", specular="0.4")
    sub(asset, "material", name="panda_dark", rgba="0.25 0.25 0.27 1", specular="0.4")
    for name in MESHES:
        sub(asset, "mesh", name=name, file=f"{name}.obj")

    worldbody = sub(root, "worldbody")
    write_body(worldbody, spec.body("panda_link0"), link_aabbs(spec))

    contact = sub(root, "contact")
    # Convex hulls of the wrist links overlap across the small link6 (checked
    # over random configurations in tests/test_assets.py).
    sub(contact, "exclude", body1="panda_link5", body2="panda_link7")

    equality = sub(root, "equality")
    sub(
        equality,
        "joint",
        name="finger_coupling",
        joint1=FINGER_JOINTS[0],
        joint2=FINGER_JOINTS[1],
        solimp="0.95 0.99 0.001",
        solref="0.005 1",
    )

    actuator = sub(root, "actuator")
    for i, joint in enumerate(ARM_JOINTS):
        sub(
            actuator,
            "velocity",
            name=f"act_{joint}",
            joint=joint,
            kv=fmt(KV[i]),
            ctrlrange=fmt(-DQ_MAX[i], DQ_MAX[i]),
            forcerange=fmt(-TAU_MAX[i], TAU_MAX[i]),
        )
    sub(
        actuator,
        "position",
        name="act_gripper",
        joint=FINGER_JOINTS[0],
        kp=fmt(GRIPPER_KP),
        kv=fmt(GRIPPER_KV),
        ctrlrange=fmt(0, GRIPPER_OPEN),
        forcerange=fmt(-GRIPPER_FORCE, GRIPPER_FORCE),
    )

    sensor = sub(root, "sensor")
    for joint in ARM_JOINTS:
        sub(sensor, "jointpos", name=f"{joint}_pos", joint=joint)
    for joint in ARM_JOINTS:
        sub(sensor, "jointvel", name=f"{joint}_vel", joint=joint)
    sub(sensor, "force", name="wrist_force", site="wrist_site")
    sub(sensor, "torque", name="wrist_torque", site="wrist_site")

    return root


def build(out_dir: Path) -> None:
    copy_sources(out_dir)
    spec = compile_urdf(out_dir / "meshes")
    xml_path = out_dir / "panda.xml"
    source = "pybullet_data/franka_panda/panda.urdf (Apache-2.0)"
    xml_path.write_text(render(build_mjcf(spec), "build_panda.py", source))
    error = site_error(spec, xml_path, "panda_grasptarget", Q_MIN, Q_MAX)
    assert error < 1e-9, f"ee_site drifted from the URDF's panda_grasptarget by {error} m"
    print(f"wrote {xml_path} (ee_site vs URDF: {error:.1e} m)")


if __name__ == "__main__":
    sys.exit(run("build_panda.py", __doc__.split("\n\n")[0], REPO / "assets" / "panda", build))
