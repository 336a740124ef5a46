//! Port names, rights and types (mach/port.h, mach/message.h).

mach_types! {
    /// mach/port.h
    pub type mach_port_name_t = u32;
    /// mach/port.h (user space: a name, not a kernel pointer)
    pub type mach_port_t = mach_port_name_t;
    /// mach/port.h
    pub type mach_port_right_t = u32;
    /// mach/port.h
    pub type mach_port_type_t = u32;
    /// mach/port.h
    pub type mach_port_urefs_t = u32;
    /// mach/port.h
    pub type mach_port_delta_t = i32;
    /// mach/message.h
    pub type mach_msg_type_name_t = u32;
}

/// `MACH_PORT_TYPE(right)`: the type bit of a right.
pub const fn mach_port_type(right: mach_port_right_t) -> mach_port_type_t {
    1 << (right + 16)
}

mach_consts! {
    pub const MACH_PORT_NULL: mach_port_name_t = 0;
    pub const MACH_PORT_DEAD: mach_port_name_t = !0;

    pub const MACH_PORT_RIGHT_SEND: mach_port_right_t = 0;
    pub const MACH_PORT_RIGHT_RECEIVE: mach_port_right_t = 1;
    pub const MACH_PORT_RIGHT_SEND_ONCE: mach_port_right_t = 2;
    pub const MACH_PORT_RIGHT_PORT_SET: mach_port_right_t = 3;
    pub const MACH_PORT_RIGHT_DEAD_NAME: mach_port_right_t = 4;
    pub const MACH_PORT_RIGHT_LABELH: mach_port_right_t = 5;
    /// The count of rights: anything from here on is not a right.
    pub const MACH_PORT_RIGHT_NUMBER: mach_port_right_t = 6;

    pub const MACH_PORT_TYPE_NONE: mach_port_type_t = 0;
    pub const MACH_PORT_TYPE_SEND: mach_port_type_t = mach_port_type(MACH_PORT_RIGHT_SEND);
    pub const MACH_PORT_TYPE_RECEIVE: mach_port_type_t = mach_port_type(MACH_PORT_RIGHT_RECEIVE);
    pub const MACH_PORT_TYPE_SEND_ONCE: mach_port_type_t = mach_port_type(MACH_PORT_RIGHT_SEND_ONCE);
    pub const MACH_PORT_TYPE_PORT_SET: mach_port_type_t = mach_port_type(MACH_PORT_RIGHT_PORT_SET);
    pub const MACH_PORT_TYPE_DEAD_NAME: mach_port_type_t = mach_port_type(MACH_PORT_RIGHT_DEAD_NAME);

    /// Make a send right from a receive right (mach/message.h).
    pub const MACH_MSG_TYPE_MAKE_SEND: mach_msg_type_name_t = 20;
}

/// The most user references one name can hold for a send right or a dead name. Kernel-private, so not
/// in the SDK and not ABI-checked: osfmk/ipc/port.h:80 in xnu-11417.121.6 (:79 in xnu-1504.15.3),
/// `#define MACH_PORT_UREFS_MAX ((mach_port_urefs_t) ((1 << 16) - 1))`.
pub const MACH_PORT_UREFS_MAX: mach_port_urefs_t = (1 << 16) - 1;
