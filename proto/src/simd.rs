//! The one `unsafe` of runtime CPU dispatch: calling a `#[target_feature]` function.
//!
//! [`crate::__sg_target_feature_kernel`] turns one `#[inline(always)]` kernel body into a copy
//! compiled for a feature list and a safe wrapper around it. The dispatch tables
//! ([`crate::convert::ConvertKernels`], the daemon's `engine::mix::MixKernels`) hold such a
//! wrapper only after [`crate::convert::Isa::supported`] detected those features.

/// Defines, for one kernel body, a `#[target_feature]` copy and a safe wrapper around it.
///
/// The wrappers are private to this crate's dispatch: [`ConvertKernels::for_isa`] (and the
/// daemon's mix table, through its own copy of this pattern) puts one in a table only after
/// [`Isa::supported`] detected the features it was compiled for.
#[cfg(target_arch = "x86_64")]
#[macro_export]
#[doc(hidden)]
macro_rules! __sg_target_feature_kernel {
    ($feat:literal, $safe:ident, $inner:ident, $body:path, ($($a:ident: $t:ty),*) $(-> $r:ty)?) => {
        #[target_feature(enable = $feat)]
        fn $inner($($a: $t),*) $(-> $r)? {
            $body($($a),*)
        }
        pub(crate) fn $safe($($a: $t),*) $(-> $r)? {
            // SAFETY: this wrapper is only put in a kernel table after `Isa::supported`
            // detected (is_x86_feature_detected!) every feature in its target_feature list.
            unsafe { $inner($($a),*) }
        }
    };
}
