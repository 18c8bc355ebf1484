public enum TaskCatalog {}
