//! Fuzzer-built text: a list of pieces, each a word from a dictionary of the spellings that
//! matter to the code under test, a single byte, or free text. Raw bytes alone reach
//! anything in principle; the dictionary makes the interesting combinations likely.

use arbitrary::Arbitrary;

/// One piece of a [`Text`].
#[derive(Debug, Clone, Arbitrary)]
pub enum Piece {
    /// A word from the dictionary the text is built with (taken modulo its length).
    Word(u8),
    Byte(u8),
    Free(String),
}

/// Text made of [`Piece`]s, given meaning by a dictionary when it is rendered.
#[derive(Debug, Clone, Default, Arbitrary)]
pub struct Text(pub Vec<Piece>);

impl Text {
    /// The bytes of the pieces, words taken from `dictionary`.
    pub fn bytes(&self, dictionary: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for piece in &self.0 {
            match piece {
                Piece::Word(index) if !dictionary.is_empty() => out.extend_from_slice(
                    dictionary[usize::from(*index) % dictionary.len()].as_bytes(),
                ),
                Piece::Word(_) => {}
                Piece::Byte(byte) => out.push(*byte),
                Piece::Free(text) => out.extend_from_slice(text.as_bytes()),
            }
        }
        out
    }

    /// The pieces as text; bytes that do not make UTF-8 are replaced.
    pub fn render(&self, dictionary: &[&str]) -> String {
        String::from_utf8_lossy(&self.bytes(dictionary)).into_owned()
    }
}
