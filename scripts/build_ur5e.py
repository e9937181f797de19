"""Build ``assets/ur5e/ur5e.xml`` from the UR5e URDF that the PyBullet stub loads.

The arm is compiled by MuJoCo's own URDF parser from ``assets/ur5e/ur5e.urdf``
(written by ``assets/ur5e/make_urdf.py`` from UR's published DH parameters), so
MuJoCo and the PyBullet ``ur5e`` controller stub share one kinematic tree. The
compiled tree is written out as a clean MJCF and the parts a URDF cannot express
are added, as ``scripts/build_panda.py`` does for the Panda: gravity
compensation, joint armature and damping, velocity servos at the published
speed and torque limits, an ``ee_site`` at the tool flange (the stub's
``tool0``), keep-out sites on the wrist and forearm, and sensors. The scene
beside it (scene_reach.xml) is written by hand. See assets/ur5e/README.md.

Running the script again regenerates the committed file byte for byte:

    .venv/bin/python scripts/build_ur5e.py            # write assets/ur5e/ur5e.xml
    .venv/bin/python scripts/build_ur5e.py --check    # fail if it is stale
"""

from __future__ import annotations

import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import mujoco
import numpy as np
from mjcf_build import fmt, render, run, site_error, sub

REPO = Path(__file__).resolve().parents[1]
URDF = REPO / "assets" / "ur5e" / "ur5e.urdf"

ARM_JOINTS = (
    "shoulder_pan_joint",
    "shoulder_lift_joint",
    "elbow_joint",
    "wrist_1_joint",
    "wrist_2_joint",
    "wrist_3_joint",
)
#: every arm body is named ``ur5e_<URDF link>`` (the way panda.xml's are ``panda_*``): the
#: prefix tells the arm's geoms from the world's
BODY_PREFIX = "ur5e_"

# Published UR5e limits (config/ur5e/joint_limits.yaml of UR's ROS 2 description,
# https://github.com/UniversalRobots/Universal_Robots_ROS2_Description, and the UR5e manual);
# the URDF carries the same values, the script checks it does.
Q_LIMIT = (2 * np.pi, 2 * np.pi, np.pi, 2 * np.pi, 2 * np.pi, 2 * np.pi)
DQ_MAX = np.pi  # 180 deg/s on every joint
TAU_MAX = (150.0, 150.0, 150.0, 28.0, 28.0, 28.0)

# Velocity-servo gains (N m s/rad), chosen like the Panda's: kv ~ M_ii / 4 ms with M_ii the
# joint-space inertia's diagonal (armature included) over the Reach home pose, so a velocity
# step settles within ~20 ms where the torque limit does not saturate; implicitfast
# integrates the servo damping implicitly, so they are stable at dt = 2 ms.
KV = (200.0, 400.0, 250.0, 20.0, 15.0, 12.0)
ARMATURE = (0.1, 0.1, 0.1, 0.05, 0.05, 0.05)
DAMPING = (1.0, 1.0, 1.0, 0.5, 0.5, 0.5)

# Keep-out sites: (body, name, position in the body frame, radius). Each sits on the axis
# of the link's collision shape (make_urdf.py's GEOMETRY); the radius covers its cross-section.
# ee_site is the flange centre (the stub's tool0), its radius the flange's.
EE_SITE = ("wrist_3_link", "ee_site", (0.0, 0.0, 0.0996), 0.04)
KEEPOUT_SITES = (
    ("wrist_3_link", "site_wrist3", (0.0, 0.0, 0.0498), 0.045),
    ("wrist_2_link", "site_wrist2", (0.0, 0.0, 0.04985), 0.05),
    ("wrist_1_link", "site_wrist1", (0.0, 0.0, 0.06665), 0.05),
    ("forearm_link", "site_forearm", (-0.3, 0.0, 0.01), 0.05),
)


def compile_urdf() -> mujoco.MjSpec:
    """Parse the URDF with MuJoCo's URDF compiler, keeping the fixed ``tool0`` as a body."""
    text = URDF.read_text()
    extension = '<mujoco><compiler fusestatic="false" discardvisual="true"/></mujoco>'
    head = '<robot name="ur5e">'
    assert head in text, "unexpected URDF header"
    text = text.replace(head, head + extension, 1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ur5e.urdf"
        path.write_text(text)
        spec = mujoco.MjSpec.from_file(str(path))
    spec.compile()
    return spec


def write_body(parent: ET.Element, body: mujoco.MjsBody) -> None:
    """Emit one body of the compiled tree and its children, with our additions."""
    name = body.name
    if name == "tool0":
        # massless flange frame (fixed joint, no rotation): becomes ee_site on wrist_3_link
        assert np.all(np.asarray(body.quat) == (1, 0, 0, 0)), "tool0 only translates"
        assert np.allclose(body.pos, EE_SITE[2], atol=0, rtol=0), "tool0 moved in the URDF"
        return
    elem = sub(parent, "body", name=BODY_PREFIX + name)
    if np.any(np.asarray(body.pos) != 0):
        elem.set("pos", fmt(*body.pos))
    if np.any(np.asarray(body.quat) != (1, 0, 0, 0)):
        elem.set("quat", fmt(*body.quat))
    if name == "base_link":
        elem.set("childclass", "ur5e")
    else:
        elem.set("gravcomp", "1")  # actuators do not fight gravity (no sag)
    inertia = np.asarray(body.fullinertia)
    assert not np.any(inertia[3:]), "the URDF's inertias are diagonal in their frame"
    inertial = sub(elem, "inertial", pos=fmt(*body.ipos), mass=fmt(body.mass))
    if np.any(np.asarray(body.iquat) != (1, 0, 0, 0)):
        inertial.set("quat", fmt(*body.iquat))
    inertial.set("diaginertia", fmt(*inertia[:3]))
    for joint in body.joints:
        i = ARM_JOINTS.index(joint.name)
        assert np.allclose(joint.range, (-Q_LIMIT[i], Q_LIMIT[i]), atol=1e-6), joint.name
        sub(
            elem,
            "joint",
            name=joint.name,
            class_=f"arm{1 if i < 3 else 2}",
            axis=fmt(*joint.axis),
            range=fmt(-Q_LIMIT[i], Q_LIMIT[i]),
        )
    for geom in body.geoms:
        kind = {
            mujoco.mjtGeom.mjGEOM_CYLINDER: "cylinder",
            mujoco.mjtGeom.mjGEOM_CAPSULE: "capsule",
        }
        g = sub(
            elem,
            "geom",
            name=f"{BODY_PREFIX}{name}_geom",
            type=kind[geom.type],
            size=fmt(*geom.size[:2]),
            pos=fmt(*geom.pos),
        )
        if np.any(np.asarray(geom.quat) != (1, 0, 0, 0)):
            g.set("quat", fmt(*geom.quat))
        if name in ("upper_arm_link", "wrist_1_link", "wrist_3_link"):
            g.set("material", "ur_blue")
    for site_body, site, pos, radius in (EE_SITE, *KEEPOUT_SITES):
        if site_body == name:
            sub(elem, "site", name=site, pos=fmt(*pos), size=fmt(radius))
    for child in body.bodies:
        write_body(elem, child)


def build_mjcf(spec: mujoco.MjSpec) -> ET.Element:
    """The complete ur5e.xml element tree."""
    root = ET.Element("mujoco", model="ur5e")
    sub(root, "compiler", angle="radian", autolimits="true")
    sub(root, "option", timestep="0.002", integrator="implicitfast")

    default = sub(sub(root, "default"), "default", class_="ur5e")
    sub(default, "geom", material="ur_grey", friction="1 0.005 0.0001")
    sub(default, "site", group="4", rgba="1 0.5 0 0.5")
    for cls, idx in (("arm1", 0), ("arm2", 3)):
        sub(
            sub(default, "default", class_=cls),
            "joint",
            armature=fmt(ARMATURE[idx]),
            damping=fmt(DAMPING[idx]),
        )

    asset = sub(root, "asset")
    sub(asset, "material", name="ur_grey", rgba="0.7 0.7 0.7 1", specular="0.4")
    sub(asset, "material", name="ur_blue", rgba="0.35 0.55 0.75 1", specular="0.4")

    worldbody = sub(root, "worldbody")
    write_body(worldbody, spec.body("base_link"))

    contact = sub(root, "contact")
    # The base is welded to the world, so MuJoCo's parent-child filter does not apply to
    # its child; the two cylinders overlap at the shoulder joint (PyBullet skips the pair).
    sub(contact, "exclude", body1=BODY_PREFIX + "base_link", body2=BODY_PREFIX + "shoulder_link")

    actuator = sub(root, "actuator")
    for i, joint in enumerate(ARM_JOINTS):
        sub(
            actuator,
            "velocity",
            name=f"act_{joint}",
            joint=joint,
            kv=fmt(KV[i]),
            ctrlrange=fmt(-DQ_MAX, DQ_MAX),
            forcerange=fmt(-TAU_MAX[i], TAU_MAX[i]),
        )

    sensor = sub(root, "sensor")
    for joint in ARM_JOINTS:
        sub(sensor, "jointpos", name=f"{joint}_pos", joint=joint)
    for joint in ARM_JOINTS:
        sub(sensor, "jointvel", name=f"{joint}_vel", joint=joint)
    return root


def build(out_dir: Path) -> None:
    spec = compile_urdf()
    xml_path = out_dir / "ur5e.xml"
    source = "assets/ur5e/ur5e.urdf (UR's published DH parameters)"
    xml_path.write_text(render(build_mjcf(spec), "build_ur5e.py", source))
    q_limit = np.asarray(Q_LIMIT)
    error = site_error(spec, xml_path, "tool0", -q_limit, q_limit)
    assert error < 1e-9, f"ee_site drifted from the URDF's tool0 by {error} m"
    print(f"wrote {xml_path} (ee_site vs URDF: {error:.1e} m)")


if __name__ == "__main__":
    sys.exit(run("build_ur5e.py", __doc__.split("\n\n")[0], REPO / "assets" / "ur5e", build))
