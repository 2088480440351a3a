//! One value of each type, made on first use: what a step keeps for the steps after
//! it (attached filters and programs while a case runs, what was declared while it
//! is decoded). The type belongs to the step's own module, so a step with state
//! needs no field in `Executor` or `Scope`.
//!
//! Twenty lines rather than a type-map crate: nothing here needs more.

use std::any::Any;

#[derive(Default)]
pub struct StepState(Vec<Box<dyn Any + Send>>);

impl StepState {
    /// The `T`, made with `Default` the first time it is asked for.
    pub fn of<T: Any + Send + Default>(&mut self) -> &mut T {
        let at = match self.0.iter().position(|b| b.is::<T>()) {
            Some(at) => at,
            None => {
                self.0.push(Box::new(T::default()));
                self.0.len() - 1
            }
        };
        self.0[at].downcast_mut().expect("the position of a T")
    }

    /// The `T`, if a step made one.
    pub fn get<T: Any + Send>(&self) -> Option<&T> {
        self.0.iter().find_map(|b| b.downcast_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::StepState;

    #[derive(Default)]
    struct Filters(Vec<u32>);
    #[derive(Default)]
    struct Programs(Vec<u32>);

    #[test]
    fn one_value_per_type_kept_across_calls() {
        let mut s = StepState::default();
        assert!(s.get::<Filters>().is_none());
        s.of::<Filters>().0.push(1);
        s.of::<Programs>().0.push(7);
        s.of::<Filters>().0.push(2);
        assert_eq!(s.get::<Filters>().unwrap().0, [1, 2]);
        assert_eq!(s.get::<Programs>().unwrap().0, [7]);
    }
}
