using System.Globalization;
using System.Security.Cryptography;
using System.Text;

namespace Retrieval.Core.Data;

/// <summary>
/// Reads the MovieLens layouts users have (100k, 1M, and the CSV family), detected from the files present.
/// A malformed line is an error naming the file and line; blank lines are skipped and counted in the log.
/// </summary>
public static class MovieLensLoader
{
    // The 19 genres of ml-100k's u.item, in column order (u.genre lists the same).
    private static readonly string[] Ml100kGenres =
    [
        "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
        "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
    ];

    // ml-1m users.dat occupation codes.
    private static readonly string[] Ml1mOccupations =
    [
        "other", "academic/educator", "artist", "clerical/admin", "college/grad student", "customer service",
        "doctor/health care", "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer", "programmer",
        "retired", "sales/marketing", "scientist", "self-employed", "technician/engineer", "tradesman/craftsman",
        "unemployed", "writer",
    ];

    private static readonly Encoding Latin1 = Encoding.Latin1;

    /// <summary>Which format the folder holds, or null when it holds none.</summary>
    public static MovieLensFormat? DetectFormat(string directory)
    {
        bool Has(string f) => File.Exists(Path.Combine(directory, f));
        if (Has("u.data") && Has("u.item"))
        {
            return MovieLensFormat.Ml100k;
        }
        if (Has("ratings.dat") && Has("movies.dat"))
        {
            return MovieLensFormat.Ml1m;
        }
        if (Has("ratings.csv") && Has("movies.csv"))
        {
            return MovieLensFormat.Csv;
        }
        return null;
    }

    public static MovieLensDataset Load(string directory, Action<string>? log = null)
    {
        var format = DetectFormat(directory) ?? throw new DataFormatException(directory, 0,
            "no MovieLens files found: expected u.data + u.item (100k), ratings.dat + movies.dat (1M), " +
            "or ratings.csv + movies.csv (latest-small, 20M, 25M, 32M)");
        var reader = new Reader(log);
        var dataset = format switch
        {
            MovieLensFormat.Ml100k => Load100k(directory, reader),
            MovieLensFormat.Ml1m => Load1m(directory, reader),
            _ => LoadCsv(directory, reader),
        };
        log?.Invoke($"Loaded {dataset.Name} ({format}): {dataset.Ratings.Count:N0} ratings, " +
            $"{dataset.Movies.Count:N0} movies, {dataset.Users.Count:N0} user profiles");
        return dataset;
    }

    private static MovieLensDataset Load100k(string dir, Reader reader)
    {
        var genreNames = Ml100kGenres;
        var genreFile = Path.Combine(dir, "u.genre");
        if (File.Exists(genreFile))
        {
            var names = new List<string>();
            foreach (var (line, _) in reader.Lines(genreFile, Latin1))
            {
                names.Add(line.Split('|')[0]);
            }
            genreNames = [.. names];
        }

        var movies = new List<Movie>();
        var itemFile = Path.Combine(dir, "u.item");
        foreach (var (line, number) in reader.Lines(itemFile, Latin1))
        {
            var parts = line.Split('|');
            if (parts.Length < 5)
            {
                throw new DataFormatException(itemFile, number, $"expected at least 5 '|'-separated fields, found {parts.Length}");
            }
            int id = ParseInt(parts[0], itemFile, number, "movie id");
            var genres = new List<string>();
            for (int g = 5; g < parts.Length && g - 5 < genreNames.Length; g++)
            {
                if (parts[g] == "1")
                {
                    genres.Add(genreNames[g - 5]);
                }
                else if (parts[g] != "0")
                {
                    throw new DataFormatException(itemFile, number, $"genre flag {g - 4} must be 0 or 1, found '{parts[g]}'");
                }
            }
            movies.Add(new Movie(id, parts[1], genres, ReleaseYear(parts[2], parts[1])));
        }

        var users = new Dictionary<string, UserProfile>();
        var userFile = Path.Combine(dir, "u.user");
        if (File.Exists(userFile))
        {
            foreach (var (line, number) in reader.Lines(userFile, Latin1))
            {
                var p = line.Split('|');
                if (p.Length != 5)
                {
                    throw new DataFormatException(userFile, number, $"expected 5 '|'-separated fields, found {p.Length}");
                }
                users[p[0]] = new UserProfile(p[0], ParseInt(p[1], userFile, number, "age"), p[2], p[3], p[4]);
            }
        }

        var dataFile = Path.Combine(dir, "u.data");
        var ratings = ReadRatings(reader, dataFile, Encoding.ASCII, line => SplitWhitespace(line), 4, movies);
        return new MovieLensDataset(Path.GetFileName(Path.GetFullPath(dir)), MovieLensFormat.Ml100k, ratings, movies,
            users, reader.Fingerprint());
    }

    private static MovieLensDataset Load1m(string dir, Reader reader)
    {
        var movies = new List<Movie>();
        var movieFile = Path.Combine(dir, "movies.dat");
        foreach (var (line, number) in reader.Lines(movieFile, Latin1))
        {
            var p = line.Split("::");
            if (p.Length != 3)
            {
                throw new DataFormatException(movieFile, number, $"expected 3 '::'-separated fields, found {p.Length}");
            }
            movies.Add(new Movie(ParseInt(p[0], movieFile, number, "movie id"), p[1], SplitGenres(p[2]), ReleaseYear("", p[1])));
        }

        var users = new Dictionary<string, UserProfile>();
        var userFile = Path.Combine(dir, "users.dat");
        if (File.Exists(userFile))
        {
            foreach (var (line, number) in reader.Lines(userFile, Latin1))
            {
                var p = line.Split("::");
                if (p.Length != 5)
                {
                    throw new DataFormatException(userFile, number, $"expected 5 '::'-separated fields, found {p.Length}");
                }
                int occupation = ParseInt(p[3], userFile, number, "occupation");
                users[p[0]] = new UserProfile(p[0], ParseInt(p[2], userFile, number, "age"), p[1],
                    occupation >= 0 && occupation < Ml1mOccupations.Length ? Ml1mOccupations[occupation] : null, p[4]);
            }
        }

        var ratings = ReadRatings(reader, Path.Combine(dir, "ratings.dat"), Latin1, line => line.Split("::"), 4, movies);
        return new MovieLensDataset(Path.GetFileName(Path.GetFullPath(dir)), MovieLensFormat.Ml1m, ratings, movies,
            users, reader.Fingerprint());
    }

    private static MovieLensDataset LoadCsv(string dir, Reader reader)
    {
        var movies = new List<Movie>();
        var movieFile = Path.Combine(dir, "movies.csv");
        bool header = true;
        foreach (var (line, number) in reader.Lines(movieFile, Encoding.UTF8))
        {
            var p = SplitCsv(line, movieFile, number);
            if (header)
            {
                header = false;
                if (p.Count > 0 && p[0] == "movieId")
                {
                    continue;
                }
            }
            if (p.Count != 3)
            {
                throw new DataFormatException(movieFile, number, $"expected 3 comma-separated fields, found {p.Count}");
            }
            var genres = p[2] == "(no genres listed)" ? [] : SplitGenres(p[2]);
            movies.Add(new Movie(ParseInt(p[0], movieFile, number, "movieId"), p[1], genres, ReleaseYear("", p[1])));
        }
        header = true;
        var ratings = ReadRatings(reader, Path.Combine(dir, "ratings.csv"), Encoding.UTF8, line =>
        {
            if (header)
            {
                header = false;
                if (line.StartsWith("userId", StringComparison.Ordinal))
                {
                    return null;
                }
            }
            return line.Split(',');
        }, 4, movies);
        return new MovieLensDataset(Path.GetFileName(Path.GetFullPath(dir)), MovieLensFormat.Csv, ratings, movies,
            new Dictionary<string, UserProfile>(), reader.Fingerprint());
    }

    private static RatingTable ReadRatings(Reader reader, string file, Encoding encoding, Func<string, string[]?> split,
        int fields, IReadOnlyList<Movie> movies)
    {
        var known = new HashSet<int>(movies.Count);
        foreach (var m in movies)
        {
            known.Add(m.Id);
        }
        var userIntern = new Dictionary<string, string>();
        var users = new List<string>();
        var movieIds = new List<int>();
        var values = new List<float>();
        var timestamps = new List<long>();
        foreach (var (line, number) in reader.Lines(file, encoding))
        {
            var p = split(line);
            if (p is null)
            {
                continue;
            }
            if (p.Length != fields)
            {
                throw new DataFormatException(file, number, $"expected {fields} fields (user, movie, rating, timestamp), found {p.Length}");
            }
            if (p[0].Length == 0)
            {
                throw new DataFormatException(file, number, "empty user id");
            }
            int movie = ParseInt(p[1], file, number, "movie id");
            if (!known.Contains(movie))
            {
                throw new DataFormatException(file, number, $"movie id {movie} is not in the movie catalogue");
            }
            if (!float.TryParse(p[2], NumberStyles.Float, CultureInfo.InvariantCulture, out var rating) || !float.IsFinite(rating))
            {
                throw new DataFormatException(file, number, $"rating must be a number, found '{p[2]}'");
            }
            if (!long.TryParse(p[3], NumberStyles.Integer, CultureInfo.InvariantCulture, out var ts) || ts < 0)
            {
                throw new DataFormatException(file, number, $"timestamp must be a non-negative integer (Unix seconds), found '{p[3]}'");
            }
            if (!userIntern.TryGetValue(p[0], out var user))
            {
                user = p[0];
                userIntern[user] = user;
            }
            users.Add(user);
            movieIds.Add(movie);
            values.Add(rating);
            timestamps.Add(ts);
        }
        if (users.Count == 0)
        {
            throw new DataFormatException(file, 0, "no ratings found");
        }
        return new RatingTable([.. users], [.. movieIds], [.. values], [.. timestamps]);
    }

    private static string[] SplitWhitespace(string line) =>
        line.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);

    private static List<string> SplitGenres(string field) =>
        field.Length == 0 ? [] : [.. field.Split('|')];

    /// <summary>Splits one CSV record (RFC 4180 quoting; MovieLens keeps each record on one line).</summary>
    internal static List<string> SplitCsv(string line, string file, int number)
    {
        var fields = new List<string>();
        var current = new StringBuilder();
        bool quoted = false;
        for (int i = 0; i < line.Length; i++)
        {
            char c = line[i];
            if (quoted)
            {
                if (c == '"')
                {
                    if (i + 1 < line.Length && line[i + 1] == '"')
                    {
                        current.Append('"');
                        i++;
                    }
                    else
                    {
                        quoted = false;
                    }
                }
                else
                {
                    current.Append(c);
                }
            }
            else if (c == '"')
            {
                quoted = true;
            }
            else if (c == ',')
            {
                fields.Add(current.ToString());
                current.Clear();
            }
            else
            {
                current.Append(c);
            }
        }
        if (quoted)
        {
            throw new DataFormatException(file, number, "unterminated quoted field");
        }
        fields.Add(current.ToString());
        return fields;
    }

    private static int ParseInt(string text, string file, int line, string what) =>
        int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out var value)
            ? value
            : throw new DataFormatException(file, line, $"{what} must be an integer, found '{text}'");

    /// <summary>The year from a release date such as "01-Jan-1995", else from a title ending in "(1995)".</summary>
    internal static int? ReleaseYear(string releaseDate, string title)
    {
        if (releaseDate.Length >= 4 && int.TryParse(releaseDate.AsSpan(releaseDate.Length - 4), NumberStyles.None,
                CultureInfo.InvariantCulture, out var year))
        {
            return year;
        }
        var t = title.TrimEnd();
        if (t.Length >= 6 && t[^1] == ')' && t[^6] == '(' &&
            int.TryParse(t.AsSpan(t.Length - 5, 4), NumberStyles.None, CultureInfo.InvariantCulture, out year))
        {
            return year;
        }
        return null;
    }

    /// <summary>Reads lines with numbers, skips (and counts) blank ones, and hashes every byte it reads.</summary>
    private sealed class Reader(Action<string>? log)
    {
        private readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);

        public IEnumerable<(string Line, int Number)> Lines(string file, Encoding encoding)
        {
            byte[] bytes;
            try
            {
                bytes = File.ReadAllBytes(file);
            }
            catch (IOException e)
            {
                throw new DataFormatException(file, 0, e.Message);
            }
            _hash.AppendData(Encoding.UTF8.GetBytes(Path.GetFileName(file)));
            _hash.AppendData(bytes);
            var text = encoding.GetString(bytes);
            return Enumerate(file, text.Length > 0 && text[0] == '\uFEFF' ? text[1..] : text); // a UTF-8 byte-order mark is not data
        }

        private IEnumerable<(string, int)> Enumerate(string file, string text)
        {
            int number = 0, blank = 0;
            using var lines = new StringReader(text);
            while (lines.ReadLine() is { } line)
            {
                number++;
                if (line.Length == 0 || string.IsNullOrWhiteSpace(line))
                {
                    blank++;
                    continue;
                }
                yield return (line, number);
            }
            if (blank > 0)
            {
                log?.Invoke($"{file}: skipped {blank} blank line(s)");
            }
        }

        public string Fingerprint() => Convert.ToHexStringLower(_hash.GetHashAndReset());
    }
}
