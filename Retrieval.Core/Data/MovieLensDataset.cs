namespace Retrieval.Core.Data;

/// <summary>One movie of the catalogue, in the order of the catalogue file (duplicate titles kept).</summary>
public sealed record Movie(int Id, string Title, IReadOnlyList<string> Genres, int? ReleaseYear);

/// <summary>What MovieLens knows about a user (100k and 1M only); missing values are null.</summary>
public sealed record UserProfile(string UserId, int? Age, string? Gender, string? Occupation, string? ZipCode);

/// <summary>The MovieLens layouts the loader understands.</summary>
public enum MovieLensFormat
{
    /// <summary>ml-100k: u.data (tab-separated), u.item (pipe-separated, Latin-1), u.user.</summary>
    Ml100k,

    /// <summary>ml-1m: ratings.dat, movies.dat, users.dat, '::'-separated.</summary>
    Ml1m,

    /// <summary>ml-latest-small, ml-20m, ml-25m, ml-32m: ratings.csv and movies.csv.</summary>
    Csv,
}

/// <summary>
/// Ratings as columns (one entry per rating, in file order) so that tens of millions of rows stay compact;
/// user ids are interned strings, movie ids are the dataset's own ids.
/// </summary>
public sealed class RatingTable(string[] userIds, int[] movieIds, float[] values, long[] timestamps)
{
    public string[] UserIds { get; } = userIds;
    public int[] MovieIds { get; } = movieIds;
    public float[] Values { get; } = values;

    /// <summary>Seconds since the Unix epoch, UTC.</summary>
    public long[] Timestamps { get; } = timestamps;

    public int Count => UserIds.Length;
}

/// <summary>A loaded MovieLens data set: ratings, the catalogue, user profiles where the format has them.</summary>
public sealed class MovieLensDataset
{
    public MovieLensDataset(string name, MovieLensFormat format, RatingTable ratings, IReadOnlyList<Movie> movies,
        IReadOnlyDictionary<string, UserProfile> users, string fingerprint)
    {
        Name = name;
        Format = format;
        Ratings = ratings;
        Movies = movies;
        Users = users;
        Fingerprint = fingerprint;
        RowOfMovieId = RowsById(movies);
    }

    public string Name { get; }
    public MovieLensFormat Format { get; }
    public RatingTable Ratings { get; }
    public IReadOnlyList<Movie> Movies { get; }
    public IReadOnlyDictionary<string, UserProfile> Users { get; }

    /// <summary>SHA-256 over the files read, so a model records exactly which data it saw.</summary>
    public string Fingerprint { get; }

    /// <summary>Movie id to its row in <see cref="Movies"/>.</summary>
    public IReadOnlyDictionary<int, int> RowOfMovieId { get; }

    /// <summary>Movie id to catalogue row (the first row, should an id repeat).</summary>
    public static Dictionary<int, int> RowsById(IReadOnlyList<Movie> catalogue)
    {
        var rows = new Dictionary<int, int>(catalogue.Count);
        for (int row = 0; row < catalogue.Count; row++)
        {
            rows.TryAdd(catalogue[row].Id, row);
        }
        return rows;
    }

    /// <summary>For each rating, the catalogue row of its movie.</summary>
    public int[] MovieRows()
    {
        var rows = new int[Ratings.Count];
        for (int i = 0; i < rows.Length; i++)
        {
            rows[i] = RowOfMovieId[Ratings.MovieIds[i]];
        }
        return rows;
    }
}

/// <summary>A data file that could not be read: names the file, the line and what was wrong.</summary>
public sealed class DataFormatException(string file, int line, string problem)
    : Exception(line > 0 ? $"{file}:{line}: {problem}" : $"{file}: {problem}")
{
    public string File { get; } = file;
    public int Line { get; } = line;
}
