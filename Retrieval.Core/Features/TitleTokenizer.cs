using System.Text;

namespace Retrieval.Core.Features;

/// <summary>
/// Keras <c>TextVectorization</c> defaults: <c>lower_and_strip_punctuation</c> (ASCII lowercase, as
/// tf.strings.lower does, and the default punctuation set removed), split on runs of ASCII whitespace,
/// vocabulary by frequency (ties by token bytes, descending) capped at max_tokens with 0 = padding, 1 = OOV.
/// </summary>
public sealed class TitleTokenizer
{
    public const string Padding = "";
    public const string OutOfVocabulary = "[UNK]";

    // Keras DEFAULT_STRIP_REGEX: [!"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~']
    private const string Punctuation = "!\"#$%&()*+,-./:;<=>?@[\\]^_`{|}~'";

    private readonly Dictionary<string, int> _index;

    public TitleTokenizer(IReadOnlyList<string> vocabulary)
    {
        if (vocabulary.Count < 2 || vocabulary[0] != Padding || vocabulary[1] != OutOfVocabulary)
        {
            throw new ArgumentException("a text vocabulary starts with the padding token '' and the OOV token '[UNK]'");
        }
        Vocabulary = vocabulary;
        _index = new Dictionary<string, int>(vocabulary.Count, StringComparer.Ordinal);
        for (int i = 2; i < vocabulary.Count; i++)
        {
            _index[vocabulary[i]] = i;
        }
    }

    public IReadOnlyList<string> Vocabulary { get; }

    public static string Standardize(string text)
    {
        var sb = new StringBuilder(text.Length);
        foreach (char c in text)
        {
            if (Punctuation.Contains(c))
            {
                continue;
            }
            sb.Append(c is >= 'A' and <= 'Z' ? (char)(c + 32) : c);
        }
        return sb.ToString();
    }

    public static List<string> Split(string standardized)
    {
        var tokens = new List<string>();
        int start = -1;
        for (int i = 0; i <= standardized.Length; i++)
        {
            bool space = i == standardized.Length || standardized[i] is ' ' or '\t' or '\n' or '\v' or '\f' or '\r';
            if (space)
            {
                if (start >= 0)
                {
                    tokens.Add(standardized[start..i]);
                    start = -1;
                }
            }
            else if (start < 0)
            {
                start = i;
            }
        }
        return tokens;
    }

    public static List<string> Tokens(string text) => Split(Standardize(text));

    public static TitleTokenizer Fit(IEnumerable<string> texts, int maxTokens = 10_000)
    {
        if (maxTokens < 3)
        {
            throw new ArgumentOutOfRangeException(nameof(maxTokens), maxTokens, "max tokens must leave room for padding, OOV and one token");
        }
        var counts = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var text in texts)
        {
            foreach (var token in Tokens(text))
            {
                counts[token] = counts.GetValueOrDefault(token) + 1;
            }
        }
        var ordered = counts.ToList();
        ordered.Sort((a, b) =>
        {
            int byCount = b.Value.CompareTo(a.Value);
            return byCount != 0 ? byCount : CompareUtf8(b.Key, a.Key);
        });
        var vocabulary = new List<string>(Math.Min(ordered.Count, maxTokens - 2) + 2) { Padding, OutOfVocabulary };
        foreach (var (token, _) in ordered.Take(maxTokens - 2))
        {
            vocabulary.Add(token);
        }
        return new TitleTokenizer(vocabulary);
    }

    private static int CompareUtf8(string a, string b)
    {
        var x = Encoding.UTF8.GetBytes(a);
        var y = Encoding.UTF8.GetBytes(b);
        return x.AsSpan().SequenceCompareTo(y);
    }

    /// <summary>Token indices of a text (1 for unknown tokens), without padding.</summary>
    public List<int> Encode(string text)
    {
        var tokens = Tokens(text);
        var ids = new List<int>(tokens.Count);
        foreach (var t in tokens)
        {
            ids.Add(_index.GetValueOrDefault(t, 1));
        }
        return ids;
    }
}
