//! The serde `Deserializer` the tracer drives a type's `Deserialize` with, and the
//! access types it hands out (sequences, maps, enum variants).

use std::any::type_name;

use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer, Visitor};

use super::{unsupported, Probe, TraceError, Tracer, PROBE_KEY};
use crate::schema::model::{Field, Shape, TypeShape, Variant, VariantShape};

/// The deserializer of one value: records its shape in `out`.
pub(super) struct De<'a> {
    pub(super) t: &'a mut Tracer,
    pub(super) out: &'a mut Shape,
}

macro_rules! primitive {
    ($method:ident, $visit:ident, $shape:ident, $value:expr) => {
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
            *self.out = Shape::$shape;
            visitor.$visit($value)
        }
    };
}

impl<'de> Deserializer<'de> for De<'_> {
    type Error = TraceError;

    fn is_human_readable(&self) -> bool {
        false
    }

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, TraceError> {
        Err(unsupported("`deserialize_any`"))
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, _: V) -> Result<V::Value, TraceError> {
        Err(unsupported("`deserialize_identifier` outside a struct"))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        visitor.visit_unit()
    }

    primitive!(deserialize_bool, visit_bool, Bool, false);
    primitive!(deserialize_i8, visit_i8, I8, 1);
    primitive!(deserialize_i16, visit_i16, I16, 1);
    primitive!(deserialize_i32, visit_i32, I32, 1);
    primitive!(deserialize_i64, visit_i64, I64, 1);
    primitive!(deserialize_i128, visit_i128, I128, 1);
    primitive!(deserialize_u8, visit_u8, U8, 1);
    primitive!(deserialize_u16, visit_u16, U16, 1);
    primitive!(deserialize_u32, visit_u32, U32, 1);
    primitive!(deserialize_u64, visit_u64, U64, 1);
    primitive!(deserialize_u128, visit_u128, U128, 1);
    primitive!(deserialize_f32, visit_f32, F32, 1.0);
    primitive!(deserialize_f64, visit_f64, F64, 1.0);
    primitive!(deserialize_char, visit_char, Char, 'a');
    primitive!(deserialize_str, visit_str, Str, "");
    primitive!(deserialize_string, visit_string, Str, String::new());
    primitive!(deserialize_bytes, visit_bytes, Bytes, &[]);
    primitive!(deserialize_byte_buf, visit_byte_buf, Bytes, Vec::new());

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        *self.out = Shape::Unit;
        visitor.visit_unit()
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        if self.t.recursing() {
            *self.out = Shape::Option(Box::new(Shape::Unknown));
            return visitor.visit_none();
        }
        let mut inner = Shape::Unknown;
        let value = visitor.visit_some(De {
            t: self.t,
            out: &mut inner,
        });
        *self.out = Shape::Option(Box::new(inner));
        value
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let name = self.t.name_for(type_name::<V::Value>(), name);
        self.t.define(&name, TypeShape::UnitStruct);
        *self.out = Shape::Named(name);
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let rust = type_name::<V::Value>();
        let name = self.t.name_for(rust, name);
        *self.out = Shape::Named(name.clone());
        self.t.enter(rust)?;
        let mut inner = Shape::Unknown;
        let value = visitor.visit_newtype_struct(De {
            t: self.t,
            out: &mut inner,
        });
        self.t.stack.pop();
        let value = value?;
        self.t.define(&name, TypeShape::NewtypeStruct(inner));
        Ok(value)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        let mut item = Shape::Unknown;
        let len = usize::from(!self.t.recursing());
        let value = visitor.visit_seq(Items::repeating(
            self.t,
            std::slice::from_mut(&mut item),
            len,
        ));
        *self.out = Shape::Seq(Box::new(item));
        value
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let mut items = vec![Shape::Unknown; len];
        let value = visitor.visit_seq(Items::positional(self.t, &mut items));
        *self.out = Shape::Tuple(items);
        value
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let rust = type_name::<V::Value>();
        let name = self.t.name_for(rust, name);
        *self.out = Shape::Named(name.clone());
        self.t.enter(rust)?;
        let mut items = vec![Shape::Unknown; len];
        let value = visitor.visit_seq(Items::positional(self.t, &mut items));
        self.t.stack.pop();
        let value = value?;
        self.t.define(&name, TypeShape::TupleStruct(items));
        Ok(value)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        let mut key = Shape::Unknown;
        let mut value_shape = Shape::Unknown;
        let len = usize::from(!self.t.recursing());
        let value = visitor.visit_map(Entries {
            t: self.t,
            key: &mut key,
            value: &mut value_shape,
            left: len,
        });
        *self.out = Shape::Map(Box::new(key), Box::new(value_shape));
        value
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let rust = type_name::<V::Value>();
        let name = self.t.name_for(rust, name);
        *self.out = Shape::Named(name.clone());
        self.t.field_names.insert(name.clone(), fields);
        self.t.enter(rust)?;
        let mut shapes = vec![Shape::Unknown; fields.len()];
        let value = match self.t.apply_probe(&name) {
            None => visitor.visit_seq(Items::positional(self.t, &mut shapes)),
            Some(probe) => {
                let (omit, extra) = match probe {
                    Probe::Omit(_, field) => (Some(field), false),
                    Probe::Unknown(_) => (None, true),
                };
                let mut keys: Vec<(usize, &'static str)> = fields
                    .iter()
                    .copied()
                    .enumerate()
                    .filter(|(_, f)| Some(*f) != omit)
                    .collect();
                if extra {
                    keys.push((usize::MAX, PROBE_KEY));
                }
                visitor.visit_map(Named {
                    t: self.t,
                    shapes: &mut shapes,
                    keys: keys.into_iter(),
                    current: 0,
                })
            }
        };
        self.t.stack.pop();
        let value = value?;
        let fields = fields
            .iter()
            .zip(shapes)
            .map(|(name, shape)| Field {
                name: name.to_string(),
                shape,
                default: false,
            })
            .collect();
        self.t.define(
            &name,
            TypeShape::Struct {
                fields,
                deny_unknown_fields: false,
            },
        );
        Ok(value)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        if variants.is_empty() {
            return Err(de::Error::custom("an enum without variants has no values"));
        }
        let rust = type_name::<V::Value>();
        let name = self.t.name_for(rust, name);
        *self.out = Shape::Named(name.clone());
        if !self.t.types.contains_key(&name) {
            let unexplored = variants
                .iter()
                .map(|v| Variant {
                    name: v.to_string(),
                    shape: VariantShape::Tuple(Vec::new()),
                })
                .collect();
            self.t
                .types
                .insert(name.clone(), TypeShape::Enum(unexplored));
        }
        self.t.enter(rust)?;
        let index = self.t.choose_variant(&name, rust, variants.len());
        self.t.stack.last_mut().expect("entered").1 = Some(index);
        let mut shape = VariantShape::Unit;
        let value = visitor.visit_enum(Choice {
            t: self.t,
            index,
            shape: &mut shape,
        });
        self.t.stack.pop();
        let value = value?;
        if let Some(TypeShape::Enum(known)) = self.t.types.get_mut(&name) {
            let slot = &mut known[index].shape;
            let unexplored = matches!(slot, VariantShape::Tuple(v) if v.is_empty());
            if unexplored {
                *slot = shape;
            } else {
                slot.merge(shape);
            }
        }
        if let Some(state) = self.t.enums.get_mut(&name) {
            state.done[index] = true;
        }
        Ok(value)
    }
}

/// The items of a sequence, tuple or positional struct.
struct Items<'a> {
    t: &'a mut Tracer,
    shapes: &'a mut [Shape],
    left: usize,
    index: usize,
    /// Every item has the first shape (a sequence).
    repeat: bool,
}

impl<'a> Items<'a> {
    /// One item per shape, in order (a tuple, a positional struct or variant).
    fn positional(t: &'a mut Tracer, shapes: &'a mut [Shape]) -> Self {
        let left = shapes.len();
        Items {
            t,
            shapes,
            left,
            index: 0,
            repeat: false,
        }
    }

    /// `len` items, all of the one shape `item` (a sequence).
    fn repeating(t: &'a mut Tracer, item: &'a mut [Shape], len: usize) -> Self {
        Items {
            t,
            shapes: item,
            left: len,
            index: 0,
            repeat: true,
        }
    }
}

/// Deserializes one value with `seed` and merges its shape into `into`.
fn trace_into<'de, S: DeserializeSeed<'de>>(
    t: &mut Tracer,
    seed: S,
    into: &mut Shape,
) -> Result<S::Value, TraceError> {
    let mut shape = Shape::Unknown;
    let value = seed.deserialize(De { t, out: &mut shape })?;
    into.merge(shape);
    Ok(value)
}

impl<'de> de::SeqAccess<'de> for Items<'_> {
    type Error = TraceError;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, TraceError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        let slot = if self.repeat { 0 } else { self.index };
        self.index += 1;
        trace_into(self.t, seed, &mut self.shapes[slot]).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

/// The entries of a map: at most one.
struct Entries<'a> {
    t: &'a mut Tracer,
    key: &'a mut Shape,
    value: &'a mut Shape,
    left: usize,
}

impl<'de> de::MapAccess<'de> for Entries<'_> {
    type Error = TraceError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, TraceError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        trace_into(self.t, seed, self.key).map(Some)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<S::Value, TraceError> {
        trace_into(self.t, seed, self.value)
    }
}

/// A struct read by field name (probe passes only).
struct Named<'a> {
    t: &'a mut Tracer,
    shapes: &'a mut [Shape],
    keys: std::vec::IntoIter<(usize, &'static str)>,
    current: usize,
}

impl<'de> de::MapAccess<'de> for Named<'_> {
    type Error = TraceError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, TraceError> {
        let Some((index, key)) = self.keys.next() else {
            return Ok(None);
        };
        self.current = index;
        seed.deserialize(key.into_deserializer()).map(Some)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<S::Value, TraceError> {
        let mut shape = Shape::Unknown;
        let value = seed.deserialize(De {
            t: self.t,
            out: &mut shape,
        })?;
        if let Some(slot) = self.shapes.get_mut(self.current) {
            slot.merge(shape);
        }
        Ok(value)
    }
}

/// The variant chosen for one enum value.
struct Choice<'a> {
    t: &'a mut Tracer,
    index: usize,
    shape: &'a mut VariantShape,
}

impl<'de, 'a> de::EnumAccess<'de> for Choice<'a> {
    type Error = TraceError;
    type Variant = Self;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self), TraceError> {
        let index = u32::try_from(self.index).expect("few variants");
        let tag: de::value::U32Deserializer<TraceError> = index.into_deserializer();
        let value = seed.deserialize(tag)?;
        Ok((value, self))
    }
}

impl<'de> de::VariantAccess<'de> for Choice<'_> {
    type Error = TraceError;

    fn unit_variant(self) -> Result<(), TraceError> {
        *self.shape = VariantShape::Unit;
        Ok(())
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<S::Value, TraceError> {
        let mut inner = Shape::Unknown;
        let value = seed.deserialize(De {
            t: self.t,
            out: &mut inner,
        })?;
        *self.shape = VariantShape::Newtype(inner);
        Ok(value)
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let mut items = vec![Shape::Unknown; len];
        let value = visitor.visit_seq(Items::positional(self.t, &mut items))?;
        *self.shape = VariantShape::Tuple(items);
        Ok(value)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let mut shapes = vec![Shape::Unknown; fields.len()];
        let value = visitor.visit_seq(Items::positional(self.t, &mut shapes))?;
        *self.shape = VariantShape::Struct(
            fields
                .iter()
                .zip(shapes)
                .map(|(name, shape)| Field {
                    name: name.to_string(),
                    // A missing `Option` field of a variant reads as `None`, as a
                    // struct's does (variants are not probed for defaults).
                    default: matches!(shape, Shape::Option(_)),
                    shape,
                })
                .collect(),
        );
        Ok(value)
    }
}
