//! The one normalisation applied to string search keys.
//!
//! JIS↔Unicode decoders disagree on a handful of characters (−/－, 〜/～, ‖/∥, ¢/￠), and people
//! type names and addresses in full- or half-width forms, in hiragana or katakana. Stored
//! resources keep the text exactly as decoded; only the search index and the query go through
//! [`search_key`], so both sides meet in one form:
//!
//! - full-width ASCII → ASCII, ideographic space → space, half-width katakana → full-width
//!   (voiced marks composed), hiragana → katakana;
//! - every dash-like character except the prolonged-sound mark ー → `-`;
//! - wave dash and full-width tilde → `~`; the double-bar pair → `∥`; the yen/cent/pound/not
//!   variants → one form;
//! - ASCII lower case; runs of white space → one space, trimmed.

/// Normalises `text` for indexing and matching.
pub fn search_key(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    let mut chars = text.chars().peekable();
    while let Some(ch) = chars.next() {
        let mut folded = fold_char(ch);
        // Half-width katakana followed by a half-width voiced or semi-voiced mark compose.
        if let Some(&next) = chars.peek()
            && let Some(composed) = compose_voiced(folded, next)
        {
            folded = composed;
            chars.next();
        }
        if folded.is_whitespace() {
            pending_space = !out.is_empty();
            continue;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        out.push(folded);
    }
    out
}

fn fold_char(ch: char) -> char {
    let code = ch as u32;
    match ch {
        // Dash-like characters (not ー U+30FC, which is part of names).
        '\u{2010}' | '\u{2011}' | '\u{2012}' | '\u{2013}' | '\u{2014}' | '\u{2015}'
        | '\u{2212}' | '\u{FF0D}' | '\u{FE63}' | '\u{FE58}' => '-',
        // Wave dash / full-width tilde.
        '\u{301C}' | '\u{FF5E}' | '\u{223C}' => '~',
        '\u{2016}' | '\u{2225}' => '\u{2225}',
        '\u{FFE0}' => '\u{00A2}',
        '\u{FFE1}' => '\u{00A3}',
        '\u{FFE2}' => '\u{00AC}',
        '\u{FFE5}' => '\u{00A5}',
        '\u{3000}' => ' ',
        'A'..='Z' => ch.to_ascii_lowercase(),
        _ if (0xFF01..=0xFF5E).contains(&code) => {
            // Full-width ASCII block maps 1:1 onto U+0021..U+007E.
            let ascii = char::from_u32(code - 0xFF01 + 0x21).unwrap_or(ch);
            ascii.to_ascii_lowercase()
        }
        _ if (0xFF61..=0xFF9F).contains(&code) => half_width_kana(ch),
        // Hiragana → katakana (same layout, offset 0x60).
        _ if (0x3041..=0x3096).contains(&code) || (0x309D..=0x309E).contains(&code) => {
            char::from_u32(code + 0x60).unwrap_or(ch)
        }
        _ => ch,
    }
}

/// Half-width katakana (U+FF61..U+FF9F) to their full-width forms.
fn half_width_kana(ch: char) -> char {
    const TABLE: &[char] = &[
        '。', '「', '」', '、', '・', 'ヲ', 'ァ', 'ィ', 'ゥ', 'ェ', 'ォ', 'ャ', 'ュ', 'ョ', 'ッ',
        'ー', 'ア', 'イ', 'ウ', 'エ', 'オ', 'カ', 'キ', 'ク', 'ケ', 'コ', 'サ', 'シ', 'ス', 'セ',
        'ソ', 'タ', 'チ', 'ツ', 'テ', 'ト', 'ナ', 'ニ', 'ヌ', 'ネ', 'ノ', 'ハ', 'ヒ', 'フ', 'ヘ',
        'ホ', 'マ', 'ミ', 'ム', 'メ', 'モ', 'ヤ', 'ユ', 'ヨ', 'ラ', 'リ', 'ル', 'レ', 'ロ', 'ワ',
        'ン', '゛', '゜',
    ];
    let index = (ch as u32 - 0xFF61) as usize;
    TABLE.get(index).copied().unwrap_or(ch)
}

fn compose_voiced(base: char, mark: char) -> Option<char> {
    let voiced = matches!(mark, '\u{FF9E}' | '\u{309B}' | '\u{3099}');
    let semi = matches!(mark, '\u{FF9F}' | '\u{309C}' | '\u{309A}');
    if !voiced && !semi {
        return None;
    }
    let code = base as u32;
    if voiced {
        if base == 'ウ' {
            return Some('ヴ');
        }
        // カ..ト (with gaps for small forms) and ハ..ホ take the dakuten at code + 1.
        let in_kt = (0x30AB..=0x30C8).contains(&code) && code % 2 == 1 && code != 0x30C3
            || matches!(base, 'ツ' | 'テ' | 'ト');
        let in_h = (0x30CF..=0x30DB).contains(&code) && (code - 0x30CF).is_multiple_of(3);
        if in_kt || in_h {
            return char::from_u32(code + 1);
        }
    } else if (0x30CF..=0x30DB).contains(&code) && (code - 0x30CF).is_multiple_of(3) {
        return char::from_u32(code + 2);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::search_key;

    #[test]
    fn decoder_variants_meet() {
        assert_eq!(search_key("登呂１−３−５"), search_key("登呂1－3-5"));
        assert_eq!(search_key("登呂１−３−５"), "登呂1-3-5");
        assert_eq!(search_key("10〜20"), search_key("10～20"));
        assert_eq!(search_key("‖"), search_key("∥"));
    }

    #[test]
    fn kana_and_width() {
        assert_eq!(search_key("ｶﾝｼﾞｬ ﾀﾛｳ"), "カンジャ タロウ");
        assert_eq!(search_key("かんじゃ　たろう"), "カンジャ タロウ");
        assert_eq!(search_key("ﾊﾟﾋﾟﾌﾟ ｶﾞｷﾞ ﾊﾞ"), "パピプ ガギ バ");
        assert_eq!(search_key("ﾃﾞﾄﾞｳﾞ"), "デドヴ");
        assert_eq!(search_key("ヨーコ"), "ヨーコ");
        assert_eq!(search_key("  ＡＢＣ  def "), "abc def");
    }
}
