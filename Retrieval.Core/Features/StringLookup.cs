using System.Text;

namespace Retrieval.Core.Features;

/// <summary>
/// Keras <c>StringLookup(vocabulary=sorted unique values, mask_token=None)</c>: value i of the vocabulary maps to
/// i + 1, anything else to 0, the out-of-vocabulary row.
/// </summary>
public sealed class StringLookup
{
    private readonly Dictionary<string, int> _index;

    public StringLookup(IReadOnlyList<string> vocabulary)
    {
        Vocabulary = vocabulary;
        _index = new Dictionary<string, int>(vocabulary.Count, StringComparer.Ordinal);
        for (int i = 0; i < vocabulary.Count; i++)
        {
            if (!_index.TryAdd(vocabulary[i], i + 1))
            {
                throw new ArgumentException($"vocabulary holds '{vocabulary[i]}' twice");
            }
        }
    }

    public IReadOnlyList<string> Vocabulary { get; }

    /// <summary>Vocabulary plus the OOV row.</summary>
    public int Cardinality => Vocabulary.Count + 1;

    public int this[string value] => value is not null && _index.TryGetValue(value, out var i) ? i : 0;

    /// <summary>The sorted unique values, in byte order as <c>np.unique</c> sorts them.</summary>
    public static StringLookup Fit(IEnumerable<string> values)
    {
        var unique = new HashSet<string>(StringComparer.Ordinal);
        foreach (var v in values)
        {
            unique.Add(v);
        }
        var sorted = unique.ToArray();
        Array.Sort(sorted, StringComparer.Ordinal);
        return new StringLookup(sorted);
    }

    public void Write(string path)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        VocabularyFile.Write(path, Vocabulary);
    }

    public static StringLookup Read(string path) => new(VocabularyFile.Read(path));
}

/// <summary>One entry a line, UTF-8; entries never hold a line break (they are escaped).</summary>
public static class VocabularyFile
{
    public static void Write(string path, IEnumerable<string> entries)
    {
        var sb = new StringBuilder();
        foreach (var e in entries)
        {
            sb.Append(Escape(e)).Append('\n');
        }
        File.WriteAllText(path, sb.ToString(), new UTF8Encoding(false));
    }

    public static string[] Read(string path)
    {
        var text = File.ReadAllText(path, Encoding.UTF8);
        if (text.Length == 0)
        {
            return [];
        }
        if (text[^1] != '\n')
        {
            throw new InvalidDataException($"{path}: vocabulary file is truncated (no final line break)");
        }
        var lines = text[..^1].Split('\n');
        for (int i = 0; i < lines.Length; i++)
        {
            lines[i] = Unescape(lines[i]);
        }
        return lines;
    }

    private static string Escape(string s) => s.Replace("\\", "\\\\").Replace("\n", "\\n").Replace("\r", "\\r");

    private static string Unescape(string s)
    {
        if (!s.Contains('\\'))
        {
            return s;
        }
        var sb = new StringBuilder(s.Length);
        for (int i = 0; i < s.Length; i++)
        {
            if (s[i] == '\\' && i + 1 < s.Length)
            {
                i++;
                sb.Append(s[i] switch { 'n' => '\n', 'r' => '\r', _ => s[i] });
            }
            else
            {
                sb.Append(s[i]);
            }
        }
        return sb.ToString();
    }
}
